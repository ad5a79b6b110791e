"""Tiny random Qwen2-Audio checkpoints built and saved by transformers itself (the oracle), with their processor.

Used by the parity tests: whatever transformers writes, auralm must read and compute the same.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|AUDIO|>", "<|audio_bos|>", "<|audio_eos|>"]

CORPUS = [
    "You are a helpful assistant.", "What's that sound?", "Describe the audio in detail.",
    "Detect the language and recognize the speech:", "Generate the caption in English:",
    "How many beeps did you hear? There were three beeps.", "The quick brown fox jumps over the lazy dog.",
    "Transcribe this recording, please.", "It is the sound of glass shattering.", "Audio 1: Audio 2: user assistant system",
    "Translate the English speech into German: Guten Tag.", "what is seven plus five? twelve",
] * 20


def build_tokenizer(vocab_size: int = 300):
    """A byte-level BPE trained on a tiny corpus, with the Qwen2-Audio special tokens; returns a `tokenizers.Tokenizer`."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=[], initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False
    )
    tok.train_from_iterator(CORPUS + ["你好世界。语音识别"], trainer=trainer)
    tok.add_special_tokens(SPECIALS)
    return tok


def randomize_(model: torch.nn.Module, seed: int) -> None:
    """Give every parameter a visible random value (norm weights near 1), so a mis-loaded tensor changes the logits."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=g) * 0.1
            if "norm" in name and name.endswith("weight"):
                p.copy_(1.0 + noise)
            else:
                p.copy_(noise)


def build_hf_checkpoint(folder: Path, n_mels: int, n_kv_heads: int, seed: int = 0, tie: bool = False) -> Path:
    """Save a random tiny Qwen2AudioForConditionalGeneration + Qwen2AudioProcessor (sharded) into `folder`."""
    from transformers import (
        PreTrainedTokenizerFast,
        Qwen2AudioConfig,
        Qwen2AudioForConditionalGeneration,
        Qwen2AudioProcessor,
        WhisperFeatureExtractor,
    )

    tok = build_tokenizer()
    vocab = tok.get_vocab_size()
    cfg = Qwen2AudioConfig(
        audio_config=dict(
            d_model=48, encoder_layers=2, encoder_attention_heads=4, encoder_ffn_dim=96, num_mel_bins=n_mels,
            max_source_positions=1500,
        ),
        text_config=dict(
            model_type="qwen2", hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=n_kv_heads, intermediate_size=112, vocab_size=vocab + 4, rms_norm_eps=1e-6,
            max_position_embeddings=4096, tie_word_embeddings=tie, rope_theta=10000.0,
        ),
        audio_token_index=tok.token_to_id("<|AUDIO|>"),
    )
    torch.manual_seed(seed)
    model = Qwen2AudioForConditionalGeneration(cfg).eval()
    randomize_(model, seed)
    model.save_pretrained(folder, max_shard_size="100KB")
    hf_tok = PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>", padding_side="left",
    )
    fe = WhisperFeatureExtractor(feature_size=n_mels)
    Qwen2AudioProcessor(feature_extractor=fe, tokenizer=hf_tok).save_pretrained(folder)
    return folder


def speechlike(seconds: float, seed: int, sr: int = 16000) -> np.ndarray:
    """A deterministic signal with speech-like structure: a gliding 100-200 Hz pitch whose harmonics reach 3-6 kHz
    (a glottal buzz, voiced for `auralm.audio.speech_gate`), noise and pauses."""
    rng = np.random.default_rng(seed)
    n = int(round(seconds * sr))
    t = np.arange(n) / sr
    f0 = 150 + 50 * np.sin(2 * np.pi * 0.7 * t + seed)
    phase = 2 * np.pi * np.cumsum(f0) / sr
    voiced = sum(np.sin(k * phase) / k for k in range(1, 31))
    envelope = (np.sin(2 * np.pi * 2.3 * t + seed) > -0.3).astype(np.float64)
    x = 0.3 * voiced * envelope + 0.02 * rng.standard_normal(n)
    return x.astype(np.float32)
