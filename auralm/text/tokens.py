"""The audio strings of the text side, each written once.

A prompt puts `AUDIO_PLACEHOLDER` where a clip goes; the processor then expands its `<|AUDIO|>` to one token per
audio embedding (`auralm.audio.geometry.num_audio_tokens`). Manifest messages mark clips with `AUDIO_MARKER`,
which the task formats and the datasets turn into placeholders.
"""

AUDIO_TOKEN = "<|AUDIO|>"  # the placeholder each audio embedding replaces
AUDIO_BOS_TOKEN = "<|audio_bos|>"
AUDIO_EOS_TOKEN = "<|audio_eos|>"
AUDIO_TOKENS = (AUDIO_BOS_TOKEN, AUDIO_TOKEN, AUDIO_EOS_TOKEN)  # in the order a prompt holds them
AUDIO_PLACEHOLDER = "".join(AUDIO_TOKENS)  # one clip's span in a prompt, before expansion
AUDIO_MARKER = "<audio>"  # a manifest message's mark for the next file of the record's `audios`
