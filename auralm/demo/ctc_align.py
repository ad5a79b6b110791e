"""Projector pre-alignment: teach the projector, before the LLM ever reads audio, to point each encoder frame of
speech at the LLM's own input embedding of the token being spoken.

Why: with a frozen encoder, a linear projector and a frozen LLM, next-token training has to discover which of the
encoder's directions carry words through 30 layers of a model that has never seen audio; on the demo model
(Whisper tiny.en + SmolLM2-135M) ~1,300 such steps taught sounds and answer forms but not speech content. Here the
same projector is trained by CTC against the transcript's own tokens, scoring frame t against token v by the
cosine between the projected frame and the LLM's embedding row of v (a learned blank direction for frames between
tokens). The encoder features are cached and the LLM is not run, so an epoch over the speech clips takes a minute;
afterwards a spoken word arrives at the LLM looking like its written token, and the LLM-side stages start from a
projector that already carries the words.

The alignment only changes `multi_modal_projector.linear` (and, with `encoder_layers`, the encoder's top blocks and
final norm, trained in extra epochs once the head reads: on the demo's world the top 2 of tiny.en's 4 blocks took
the held-out voice from 40.3% to 32.7% greedy-CTC WER in one epoch, and the real recordings from 46.9% to 40.7%):
the result is an ordinary checkpoint. Its output is
rescaled so that projected speech frames have the mean norm of the LLM's embedding rows. With `keep_head` the
projector keeps the whole head instead (`model.audiolm.Projector`'s CTC option): each frame reaches the LLM as its
posterior's mix of the LLM's own rows, so the LLM reads token embeddings instead of learning a new direction.

It is the first stage of the demo recipe (`auralm.demo.train`): it knows the synthetic world's task records and
event names.

    python -m auralm.demo.ctc_align --model BASE_DIR --train train.jsonl [--dev dev.jsonl] --out DIR
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import pad_sequence

from auralm.audio.geometry import conv_output_lengths
from auralm.checkpoint.hf import load_audiolm, read_generation_defaults, save_audiolm
from auralm.data.dataset import DataError
from auralm.data.feature_cache import EncoderCache, encode_clips, encoder_fingerprint
from auralm.data.manifest import load_manifest
from auralm.model.audiolm import Projector, ctc_collapse
from auralm.processor import Processor
from auralm.synth.signals import EVENT_NAMES
from auralm.train.optim import build_scheduler

# Which field of a task record holds the words spoken in its clip (mixed clips: a sound, then the question).
SPOKEN_FIELD = {"asr": "text", "s2tt": "text", "srwt": "text", "lid": "text", "speaker": "text",
                "voice_chat": "text_question", "mixed": "text_question"}  # fmt: skip
SOUND_TASKS = ("sound_event", "scene", "note", "caption", "aqa", "mixed")
SOUND = "sound"  # the `language` of an utterance whose text names sounds rather than transcribing speech


def _sound_words(sound: dict) -> str:
    """Words naming one synthetic sound: its event name repeated per occurrence, or an instrument and its note."""
    if "instrument" in sound:
        return f"{sound['instrument']} {sound.get('note_name', '')}".strip()
    name = EVENT_NAMES.get(sound["label"], sound["label"].replace("_", " "))
    return " ".join([name] * int(sound.get("count", 1)))


def heard_text(record: dict, sounds: bool = False) -> str | None:
    """The words a clip carries, in the order they are heard: its transcript for speech; with `sounds`, also the
    names of the sounds in sound clips (events in order, a scene, an instrument and note) and, for mixed clips, the
    sound's name before the spoken question. None when the record carries no such words."""
    task = record.get("task", "")
    if sounds and task in SOUND_TASKS:
        if task in ("sound_event", "scene"):
            return record.get("label_name")
        if task == "note":
            return _sound_words(record)
        if task in ("caption", "aqa"):
            events = sorted(record.get("events") or [], key=lambda e: e["start"])
            return " ".join(_sound_words(e) for e in events) or None
        if task == "mixed" and record.get("sound") and record.get("text_question"):
            return f"{_sound_words(record['sound'])} {record['text_question']}"
    field = SPOKEN_FIELD.get(task)
    return record.get(field) if field else None


@dataclass
class AlignConfig:
    """Settings of the CTC pre-alignment."""

    epochs: int = 6  # passes over the speech clips of the train manifest (0: only the encoder phase below)
    batch_size: int = 32  # clips per step
    lr: float = 3e-3  # AdamW learning rate (cosine decay to 10%, no weight decay)
    init_scale: float = 10.0  # initial cosine-logit scale (learned)
    max_clips: int | None = None  # use at most this many train clips (None: all)
    sounds: bool = False  # also align sound clips to the names of their sounds (see `heard_text`)
    keep_head: bool = False  # the projector keeps the CTC head (`install_head`) instead of a rescaled linear layer
    drop_blank: bool = False  # with keep_head: the LLM attends only to non-blank frames (`projector_ctc_drop_blank`)
    # After `epochs` on the frozen encoder's cached outputs: `encoder_epochs` more in which its top
    # `encoder_layers` blocks (and final norm) train with the head, at `encoder_lr` and `encoder_head_lr` (50 warm-up
    # steps, cosine decay). The states below those blocks are computed once and held in memory (float16; ~2.4 GB
    # for 12,000 clips of tiny.en), and batches come from pools sorted by length (the blocks attend over padding).
    # 0 layers: the encoder stays frozen.
    encoder_layers: int = 0
    encoder_epochs: int = 2
    encoder_lr: float = 5e-5
    encoder_head_lr: float = 3e-4
    seed: int = 0


@dataclass
class Utterance:
    audio: str  # path of the clip
    tokens: list[int]  # the LLM tokenizer's ids of the spoken text
    text: str  # the spoken text (for WER)
    language: str
    seconds: float  # clip length from the manifest (for sorting the encoder batches)


def spoken_utterances(manifest: str | Path, tokenizer, max_clips: int | None = None, seed: int = 0,
                      sounds: bool = False) -> list[Utterance]:
    """The clips of a task manifest whose spoken words are known (with `sounds`, also the clips whose sounds have
    names, see `heard_text`), with their token ids; at most `max_clips`, drawn at random with `seed` so that every
    task keeps its share."""
    records, errors = load_manifest(manifest)
    if errors and not records:
        raise DataError(f"{manifest}: no usable records (first problem: {errors[0]})")
    out = []
    for r in records:
        text = heard_text(r, sounds)
        if not text or len(r["audios"]) != 1:
            continue
        ids = tokenizer.encode(text, add_special_tokens=False).ids
        language = SOUND if sounds and r.get("task") in SOUND_TASKS else r.get("language") or "en"
        out.append(Utterance(r["audios"][0], ids, text, language, float(r.get("duration") or 0.0)))
    if max_clips is not None and len(out) > max_clips:
        out = random.Random(seed).sample(out, max_clips)
    return out


class CosineCTCHead(nn.Module):
    """Projector + cosine scoring against a fixed set of LLM embedding rows and one learned blank direction."""

    def __init__(self, projector: nn.Linear, rows: torch.Tensor, init_scale: float):
        super().__init__()
        self.proj = nn.Linear(projector.in_features, projector.out_features)
        self.proj.load_state_dict({k: v.float() for k, v in projector.state_dict().items()})
        self.register_buffer("rows", F.normalize(rows.float(), dim=-1))  # (V, D), fixed
        self.blank = nn.Parameter(torch.randn(rows.shape[1]) / math.sqrt(rows.shape[1]))  # (D,)
        self.log_scale = nn.Parameter(torch.tensor(math.log(init_scale)))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        """h (B, T, De) encoder frames -> log-probabilities (B, T, V + 1); class 0 is the blank."""
        x = F.normalize(self.proj(h), dim=-1)  # (B, T, D)
        classes = torch.cat([F.normalize(self.blank, dim=0)[None], self.rows])  # (V + 1, D)
        return (self.log_scale.exp() * x @ classes.T).log_softmax(-1)  # (B, T, V + 1)


class CachedFrames:
    """The frozen encoder's frames of each clip, from the disk cache: what the head reads."""

    def __init__(self, cache: EncoderCache, utts: list[Utterance]):
        self.feats = [torch.cat(cache.load(u.audio)).float() for u in utts]  # each (N, De)

    def __len__(self) -> int:
        return len(self.feats)

    def sizes(self) -> list[int]:
        return [f.shape[0] for f in self.feats]

    def batch(self, idx: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, N, De) padded frames and (B,) their counts."""
        return (pad_sequence([self.feats[i] for i in idx], batch_first=True),
                torch.tensor([self.feats[i].shape[0] for i in idx]))


class UpperFrames:
    """Frames from the encoder's top `k` blocks, run (and trained) on states below them computed once."""

    def __init__(self, model, processor, utts: list[Utterance], k: int, max_windows: int = 16):
        tower = model.audio_tower
        self.tower, self.start = tower, len(tower.layers) - k
        self.lower: list[torch.Tensor] = [torch.empty(0)] * len(utts)  # each (A, De) float16
        self.mel = [0] * len(utts)  # mel frames of each clip
        order = sorted(range(len(utts)), key=lambda i: utts[i].seconds)
        with torch.no_grad():
            for s in range(0, len(order), max_windows):
                idx = order[s : s + max_windows]
                feats, mask, _ = processor.features([processor.prepare_audio(utts[i].audio) for i in idx])
                if feats.shape[0] != len(idx):
                    raise ValueError("training the encoder needs clips of one 30 s window each; "
                                     f"{[utts[i].audio for i in idx]} hold more")
                lengths = mask.sum(-1)  # (B,)
                x = tower.run_blocks(feats, lengths, stop=self.start)  # (B, A, De)
                keep = conv_output_lengths(lengths)
                for j, i in enumerate(idx):
                    self.lower[i], self.mel[i] = x[j, : int(keep[j])].half(), int(lengths[j])

    def __len__(self) -> int:
        return len(self.lower)

    def sizes(self) -> list[int]:
        return self.mel

    def batch(self, idx: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, N, De) padded frames and (B,) their counts, through the top blocks (with gradients when training)."""
        h = pad_sequence([self.lower[i].float() for i in idx], batch_first=True)  # (B, A, De)
        mel = torch.tensor([self.mel[i] for i in idx])
        return self.tower.pool(self.tower.run_upper_blocks(h, mel, self.start), mel)


def _batches(sizes: list[int], size: int, rng: random.Random, pool: int = 0) -> list[list[int]]:
    """Shuffled batches; with `pool`, each batch is drawn from a pool of `pool` batches sorted by clip size (so
    batches of similar lengths pad little), and the batches are shuffled."""
    order = list(range(len(sizes)))
    rng.shuffle(order)
    if not pool:
        return [order[i : i + size] for i in range(0, len(order), size)]
    out = []
    for g in range(0, len(order), size * pool):
        group = sorted(order[g : g + size * pool], key=lambda i: sizes[i])
        out += [group[j : j + size] for j in range(0, len(group), size)]
    rng.shuffle(out)
    return out


@torch.no_grad()
def greedy_wer(head: CosineCTCHead, frames: CachedFrames | UpperFrames, utts: list[Utterance], vocab: list[int],
               tokenizer, language: str = "en") -> float:
    """WER (%) of best-path CTC decoding of the clips in `language` (English speech by default, or SOUND for the
    sound names): how much of the words the projector alone carries."""
    from auralm.eval.metrics import wer  # needs the eval extra; only runs with a dev manifest

    refs, hyps = [], []
    for i, u in enumerate(utts):
        if u.language != language:
            continue
        h, n = frames.batch([i])  # (1, N, De), (1,)
        best = head(h[:, : int(n[0])]).argmax(-1)[0].tolist()  # (T,)
        ids = [vocab[c - 1] for c in ctc_collapse(best)]
        refs.append(u.text)
        hyps.append(tokenizer.decode(ids))
    return 100.0 * wer(refs, hyps) if refs else float("nan")


def _print(message: str) -> None:
    print(message, flush=True)


def _save_state(path: Path, state: dict) -> None:
    """Write a resume state atomically (a killed write leaves the previous state)."""
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def align_projector(model, processor, train: list[Utterance], dev: list[Utterance], cache: EncoderCache,
                    cfg: AlignConfig, log: Callable[[str], None] = _print, state_file: Path | None = None) -> dict:
    """Train `model.multi_modal_projector.linear` in place by cosine CTC (see the module doc), then, with
    `cfg.encoder_layers`, the encoder's top blocks with it; returns metrics.

    With `state_file`, the head, the trained encoder blocks, the optimiser, the schedule and the batch order are
    saved there after every epoch, and a run that finds the file resumes after its last finished epoch (the same
    result as an uninterrupted run; a state of another model, other settings or other clips is refused). The
    metrics' "seconds" count the last run only. A model with a CTC head already (`projector_ctc_rows`) goes on from
    it: its linear layer, blank direction and scale start the head (scoring its own rows and `train`'s tokens), and
    with `keep_head` its blank embedding is kept."""
    t0 = time.time()
    tower = model.audio_tower
    if not 0 <= cfg.encoder_layers <= len(tower.layers):
        raise ValueError(f"encoder_layers must be 0..{len(tower.layers)} (the encoder's blocks), got {cfg.encoder_layers}")
    if not cfg.epochs and not (cfg.encoder_layers and cfg.encoder_epochs):
        raise ValueError("nothing to train: epochs is 0 and there is no encoder phase (encoder_layers, encoder_epochs)")
    # LLM token ids; class c is vocab[c - 1]. The rows of a head the model has already are kept: a word that its
    # earlier clips said and these do not stays writable (the rows are the LLM's fixed embeddings, nothing to train).
    projector = model.multi_modal_projector
    vocab = sorted({t for u in train + dev for t in u.tokens} | set(projector.ctc_rows))
    signature = {"config": asdict(cfg), "encoder": encoder_fingerprint(model), "train": [u.audio for u in train],
                 "vocab": vocab}  # fmt: skip
    resume = None
    if state_file is not None and state_file.is_file():
        resume = torch.load(state_file, weights_only=True)
        if resume["signature"] != signature:
            raise ValueError(f"{state_file} was written by a CTC alignment of another model, settings or clips; "
                             "delete it to start over")
    if cfg.epochs:  # the frozen phase reads cached encoder frames; the encoder phase computes its own
        encode_clips(cache, processor, model, {u.audio: u.seconds for u in train + dev}, progress=True)
        log(f"encoded {len(train) + len(dev)} clips in {time.time() - t0:.0f} s")
    index = {t: i + 1 for i, t in enumerate(vocab)}
    embed = model.language_model.model.embed_tokens.weight.detach()  # (V_llm, D)
    torch.manual_seed(cfg.seed)
    head = CosineCTCHead(projector.linear, embed[vocab], cfg.init_scale)
    if projector.ctc_rows:  # the model has a CTC head already: go on from it (its scoring rows may be other tokens)
        with torch.no_grad():
            head.blank.copy_(projector.ctc_blank.float())
            head.log_scale.copy_(projector.ctc_log_scale.float())
    targets = [torch.tensor([index[t] for t in u.tokens]) for u in train]
    rng = random.Random(cfg.seed)
    metrics: dict = {"clips": len(train), "vocab": len(vocab), "epoch_losses": []}
    train_frames = dev_frames = None
    if cfg.epochs:
        train_frames, dev_frames = CachedFrames(cache, train), CachedFrames(cache, dev)
    blocks: list[nn.Parameter] = []  # what trains with the head in the encoder phase: the top blocks and final norm
    if cfg.encoder_layers:
        blocks = [p for block in tower.layers[-cfg.encoder_layers:] for p in block.parameters()]
        blocks += list(tower.layer_norm.parameters())
    if resume is not None:
        head.load_state_dict(resume["head"])
        with torch.no_grad():
            for p, saved in zip(blocks, resume["blocks"]):
                p.copy_(saved)
        metrics = resume["metrics"]
        rng.setstate(resume["rng"])
        torch.set_rng_state(resume["torch_rng"])
        log(f"resuming after {resume['phase']} epoch {resume['epoch']} ({state_file})")

    def dev_wers(suffix: str) -> str:
        """Fill metrics["dev_wer" + suffix] (speech) and ["dev_sound_wer" + suffix] (sound names, if any)."""
        parts = []
        for key, language in (("dev_wer", "en"), ("dev_sound_wer", SOUND)):
            if any(u.language == language for u in dev):
                metrics[key + suffix] = greedy_wer(head, dev_frames, dev, vocab, processor.tokenizer, language)
                parts.append(f"{key.replace('_', ' ')} {metrics[key + suffix]:.1f}%")
        return ", ".join(parts)

    def run(epochs: int, groups: list[dict], warmup: int, pool: int, name: str) -> None:
        """`epochs` passes of CTC over the train clips, optimising `groups` (cosine decay to 10%); with a resume
        state, only the epochs of this phase it had not finished."""
        params = [p for g in groups for p in g["params"]]
        steps = epochs * math.ceil(len(train) / cfg.batch_size)
        opt = torch.optim.AdamW(groups, weight_decay=0.0)
        sched = build_scheduler(opt, warmup_steps=warmup, total_steps=steps, min_ratio=0.1)
        first = 0
        if resume is not None and resume["phase"] == name:
            opt.load_state_dict(resume["opt"])
            sched.load_state_dict(resume["sched"])
            first = resume["epoch"]
        else:
            metrics["steps"] = metrics.get("steps", 0) + steps
        for epoch in range(first, epochs):
            total, count = 0.0, 0
            for batch in _batches(train_frames.sizes(), cfg.batch_size, rng, pool):
                h, lengths = train_frames.batch(batch)  # (B, T, De), (B,)
                y = [targets[i] for i in batch]
                logp = head(h).transpose(0, 1)  # (T, B, V + 1), the layout ctc_loss takes
                loss = F.ctc_loss(logp, torch.cat(y), lengths, torch.tensor([len(t) for t in y]), blank=0,
                                  reduction="mean", zero_infinity=True)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(params, 1.0)
                opt.step()
                sched.step()
                total, count = total + loss.item(), count + 1
            msg = f"{name} epoch {epoch + 1}/{epochs}: ctc loss {total / count:.3f}"
            if dev:
                msg += f", {dev_wers('')}"
            metrics["epoch_losses"].append(total / count)
            if state_file is not None:
                _save_state(state_file, {
                    "signature": signature, "phase": name, "epoch": epoch + 1, "head": head.state_dict(),
                    "blocks": [p.detach().clone() for p in blocks], "opt": opt.state_dict(),
                    "sched": sched.state_dict(), "rng": rng.getstate(), "torch_rng": torch.get_rng_state(),
                    "metrics": metrics,
                })  # fmt: skip
            log(msg)

    if dev and resume is None and cfg.epochs:
        log(f"before: {dev_wers('_before')}")
    if cfg.epochs and (resume is None or resume["phase"] == "projector"):
        run(cfg.epochs, [{"params": list(head.parameters()), "lr": cfg.lr}], 0, 0, "projector")
    if cfg.encoder_layers and cfg.encoder_epochs:
        t1 = time.time()
        train_frames = UpperFrames(model, processor, train, cfg.encoder_layers)
        dev_frames = UpperFrames(model, processor, dev, cfg.encoder_layers)
        log(f"encoded {len(train) + len(dev)} clips below the top {cfg.encoder_layers} encoder blocks "
            f"in {time.time() - t1:.0f} s")
        trainable = [p.requires_grad for p in blocks]
        for p in blocks:
            p.requires_grad_(True)
        run(cfg.encoder_epochs, [{"params": list(head.parameters()), "lr": cfg.encoder_head_lr},
                                 {"params": blocks, "lr": cfg.encoder_lr}], 50, 50, "encoder")
        for p, flag in zip(blocks, trainable):
            p.requires_grad_(flag)
    metrics["seconds"] = round(time.time() - t0, 1)
    if cfg.keep_head:
        install_head(model, head, vocab, cfg.drop_blank)
        return metrics
    # Write back, scaled so that projected speech frames have the norm of an average embedding row.
    with torch.no_grad():
        clips = [train_frames.batch([i]) for i in range(min(len(train_frames), 500))]  # each (1, N, De), (1,)
        frames = torch.cat([h[0, : int(n[0])] for h, n in clips])  # (sum N, De)
        norm = head.proj(frames).norm(dim=-1).mean()
        scale = embed[vocab].float().norm(dim=-1).mean() / norm
        linear = model.multi_modal_projector.linear
        linear.weight.copy_((head.proj.weight * scale).to(linear.weight.dtype))
        linear.bias.copy_((head.proj.bias * scale).to(linear.bias.dtype))
    metrics["output_scale"] = float(scale)
    return metrics


@torch.no_grad()
def install_head(model, head: CosineCTCHead, vocab: list[int], drop_blank: bool = False) -> None:
    """Make the trained head the model's projector (`AudioLMConfig.projector_ctc_rows`): frames then reach the LLM
    as their CTC posterior's mix of its embedding rows; a blank frame starts as the mean embedding row (with
    `drop_blank`, blank frames are left out instead: `AudioLMConfig.projector_ctc_drop_blank`)."""
    model.cfg.projector_ctc_rows = list(vocab)
    model.cfg.projector_ctc_drop_blank = bool(drop_blank)
    linear = model.multi_modal_projector.linear
    projector = Projector(model.cfg).to(device=linear.weight.device, dtype=linear.weight.dtype)
    projector.linear.load_state_dict(head.proj.state_dict())
    projector.ctc_blank.copy_(head.blank)
    projector.ctc_log_scale.copy_(head.log_scale)
    old = model.multi_modal_projector
    # a blank frame keeps what an earlier head's blank became; a new head's starts as the mean embedding row
    blank_embed = old.ctc_blank_embed if old.ctc_rows else model.language_model.model.embed_tokens.weight.mean(0)
    projector.ctc_blank_embed.copy_(blank_embed.float())
    model.multi_modal_projector = projector


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, type=Path, help="model folder whose projector is aligned")
    ap.add_argument("--train", required=True, type=Path, help="task manifest with speech clips")
    ap.add_argument("--dev", type=Path, help="task manifest for the greedy-CTC WER after each epoch")
    ap.add_argument("--out", required=True, type=Path, help="where the aligned model folder is written")
    ap.add_argument("--cache-dir", type=Path, help="encoder cache folder (default: OUT/../encoder_cache)")
    for name, value in vars(AlignConfig()).items():
        flag = f"--{name.replace('_', '-')}"
        if isinstance(value, bool):
            ap.add_argument(flag, action=argparse.BooleanOptionalAction, default=value)
        else:
            ap.add_argument(flag, type=type(value) if value is not None else int, default=value)
    args = ap.parse_args(argv)
    try:
        model = load_audiolm(args.model)
        processor = Processor.from_pretrained(args.model)
        cfg = AlignConfig(**{k: getattr(args, k) for k in vars(AlignConfig())})
        train = spoken_utterances(args.train, processor.tokenizer, cfg.max_clips, cfg.seed, cfg.sounds)
        dev = spoken_utterances(args.dev, processor.tokenizer, sounds=cfg.sounds) if args.dev else []
    except (OSError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if not train:
        print(f"error: {args.train} has no clips with known spoken text (tasks {sorted(SPOKEN_FIELD)})", file=sys.stderr)
        return 2
    cache = EncoderCache(args.cache_dir or args.out.parent / "encoder_cache", encoder_fingerprint(model))
    metrics = align_projector(model, processor, train, dev, cache, cfg)
    save_audiolm(model, args.out, generation_defaults=read_generation_defaults(args.model))
    processor.save_pretrained(args.out)
    (args.out / "ctc_align.json").write_text(json.dumps(metrics, indent=1))
    print(json.dumps(metrics))
    return 0


if __name__ == "__main__":
    sys.exit(main())
