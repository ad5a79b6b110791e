"""Train the embedded demo model the papers' way, in miniature, on the synthetic world:

    python -m auralm.demo.train --world DIR --out runs/demo --scale 0.5 --ctc-head \\
        --stages ctc,read,pretrain,sft,dpo,voice,reckon,hear --steps read=600,pretrain=300,sft=210,dpo=10,voice=240 \
        --hear-epochs 4 --hear-clips 19000 --merge-energy 0.999   # the shipped chain as one command (README)

0. base: real Whisper tiny.en encoder + SmolLM2-135M-Instruct + a new projector (`auralm.demo.base`);
   voice-chat questions without answers get the LLM's own answer to their text form (so voice chat keeps the
   LLM's knowledge).
1. ctc: the projector alone learns, by CTC on cached encoder frames, to point spoken words at the LLM's own
   embedding rows of their tokens, and sounds at the rows of their names (`auralm.demo.ctc_align`); the later
   stages move it 20x slower than the LoRA so that they keep that alignment. With --ctc-encoder-layers K the
   encoder's top K blocks then train with the CTC head for 2 more epochs (the papers train the encoder).
   (align, the earlier recipe's first stage, `--stages align,pretrain,sft,dpo`: instead of ctc, only the projector
   and the new token rows learn by next-token pre-training.)
   With --ctc-head the projector keeps the CTC head: each frame reaches the LLM as its posterior's mix of the LLM's
   own embedding rows (LegoSLM-style; `model.audiolm.Projector`).
1b. read (opt-in, `--stages ctc,read,pretrain,sft,dpo`): ASR only, on every English clip whose words are known,
   LoRA; the LLM learns to read the aligned audio before other tasks compete for the adapter.
2. pretrain (multi-task pre-training): + LoRA on every Linear of the LLM.
3. sft: conversations in both modes (audio analysis, voice chat) + task records as one-turn chats, LoRA.
4. dpo: preference pairs, LoRA, the SFT model as the frozen reference.
5. voice (after dpo): voice chat, the train split's arithmetic typed, and a replay of the other tasks; LoRA r=8
   (`voice_manifest`; `--voice-said N` adds sentences heard alone and answered as the LLM answers them typed).
5b. reckon (after voice): arithmetic answered as equations ("4 × 7 = 28"), the train split's problems typed in
   every phrasing and heard, beep counts answered as the beeps heard ("beep beep beep: 3"), and a replay of the
   other tasks; LoRA r=8 (`reckon_manifest`).
6. hear (opt-in, after the LLM stages; `--from-demo --stages hear` goes on from the shipped model): the encoder's
   top `--hear-layers` blocks train with the kept CTC head by CTC on the speech and sound clips (`hear_stage`); the
   LLM reads the head's posterior mixes of its own rows, so it is served by a head that hears better as it is.
Every stage resumes from its checkpoints (the ctc stage after its last finished epoch) and is skipped once its final
folder exists; then the shipped files are packed (`auralm.demo.package`).
"""

from __future__ import annotations

import argparse
import json
import random
import re
import shutil
import sys
import time
from pathlib import Path

import torch

from auralm.checkpoint.hf import load_audiolm, read_generation_defaults, save_audiolm
from auralm.config import AudioLMConfig
from auralm.cpu import fast_bf16
from auralm.data.feature_cache import EncoderCache, encoder_fingerprint
from auralm.data.manifest import write_manifest
from auralm.demo.base import save_base
from auralm.demo.ctc_align import AlignConfig, align_projector, spoken_utterances
from auralm.demo.locate import demo_model_dir
from auralm.demo.package import META_NAME, SHIPPED_DIR, pack, shipped_stages
from auralm.eval.voice_knowledge import llm_answers
from auralm.infer.api import AudioChat
from auralm.processor import Processor
from auralm.synth import texts
from auralm.text.chat import render_chat
from auralm.text.prompts import ASR_INSTRUCTION, chat_instruction
from auralm.train.config import load_config
from auralm.train.recipes import train

# The demo model is tuned on ChatML (SFT), so transcription asks in a chat turn (auralm.json of the folder).
_ASR_TURN = [{"role": "user", "content": [{"type": "audio", "audio": ""},
                                          {"type": "text", "text": chat_instruction(ASR_INSTRUCTION)}]}]
CHAT_PROMPTS = {"asr_prompt": render_chat(_ASR_TURN)}
CHAT_PROMPTS["asr_prompt_no_language"] = CHAT_PROMPTS["asr_prompt"]
# Stages that train transcription as a chat turn; their folders get CHAT_PROMPTS, so that evaluating a stage asks as it
# was trained (without them, `transcribe` asks in the pre-training format: measured on the read stage's folder,
# real-speech WER 90.3% asked that way, 65.5% asked in its chat turn).
CHAT_STAGES = ("read", "sft", "dpo", "voice", "reckon")
# With the CTC head kept (--ctc-head), transcripts are decoded with joint CTC / LLM scores in 4 beams (`infer.beam`;
# auralm.json `asr_num_beams`, `asr_ctc_weight`). Measured on the 8 real clips, from the encoder-tuned head after 300
# read steps: greedy LLM 66.4% WER, greedy joint (w 0.5) 47.8%, 4 beams joint w 0.5 39.8%, w 0.7 45.1%.
CTC_DECODING = {"asr_num_beams": 4, "asr_ctc_weight": 0.5}


def chat_options(ctc_head: bool) -> dict:
    """The auralm.json of a chat-trained folder: its transcription prompts, and with a CTC head its decoding."""
    return {**CHAT_PROMPTS, **(CTC_DECODING if ctc_head else {})}


def fill_answers(base_dir: Path, manifest: Path, out: Path, batch: int = 16, answer: bool = True) -> int:
    """Copy a manifest, answering every `answer: null` record with the base LLM's answer to its text question
    (or leaving those records out when `answer` is False)."""
    if out.is_file():
        return 0
    records = [json.loads(line) for line in manifest.read_text().splitlines() if line.strip()]
    todo = [r for r in records if r.get("answer") is None and r.get("text_question")]
    if not answer:
        records = [r for r in records if not (r.get("answer") is None and r.get("text_question"))]
        todo = []
    answer_questions(base_dir, todo, batch)
    write_manifest(out, records)
    return len(todo)


def answer_questions(base_dir: Path, records: list[dict], batch: int = 16) -> None:
    """Set each record's `answer` to the base LLM's answer to its typed `text_question` (no model loaded for none)."""
    if records:
        chat = AudioChat.from_folder(base_dir)
        for r, reply in zip(records, llm_answers(chat, [r["text_question"] for r in records], batch=batch)):
            r["answer"] = reply


STAGES = ("align", "read", "pretrain", "sft", "dpo", "voice", "reckon")  # the LLM stages, in the order they run (after ctc)

# Tasks whose English clips carry a known transcript (`text`): the read stage's material.
READ_TASKS = ("asr", "s2tt", "srwt", "speaker", "lid")


def reading_manifest(manifest: Path, out: Path, tasks: tuple[str, ...] = READ_TASKS) -> int:
    """Write the English clips of `manifest` whose words are known as ASR records (the read stage's data); returns
    how many. Written once (atomically)."""
    if out.is_file():
        return sum(1 for line in out.read_text().splitlines() if line.strip())
    records = []
    for line in manifest.read_text().splitlines():
        r = json.loads(line) if line.strip() else {}
        if r.get("task") in tasks and r.get("language") == "en" and r.get("text") and len(r.get("audios", [])) == 1:
            records.append({"id": f"read-{r['id']}", "task": "asr", "audios": r["audios"], "duration": r.get("duration"),
                            "language": "en", "text": r["text"]})
    write_manifest(out, records)
    return len(records)


# The voice stage's material (after dpo in the shipped run): in the multi-task stages a spoken question is one row in
# ~14 and is seen about once, so voice chat is barely learned. This stage trains on
# - every voice-chat and mixed-audio record of the train split (the general questions answered by the base LLM),
# - the train split's arithmetic problems typed, with their answers (SmolLM2-135M gets 7% of them typed: the text
#   teaches what the LLM lacks; the test split's problems stay held out),
# - a replay of REPLAY_SHARE as many other records, so that the other tasks are kept,
# - with --voice-said N, N English sentences heard as a user turn alone and answered by the base LLM as it answers
#   the typed sentence (sequence-level distillation).
# Measured from the r4 folder, 240 steps, on world v2's test split: replay 1x, no sentences (shipped): voice chat
# 35.4 -> 46.2%, AQA 45 -> 55%, BLEU 25.2 -> 28.8, real speech 40.7 -> 43.4%; replay 0.5x with 600 sentences: voice
# chat 43.1%, typed arithmetic 7 -> 36% (spoken 7.1%: the numbers are misheard), BLEU 21.6, and answers that begin
# "The answer to the question ...", SmolLM2's habit with plain statements.
SAID_CLIPS = 0
REPLAY_SHARE = 1.0


def voice_manifest(train: Path, out: Path, base: Path, seed: int = 0, said_clips: int = SAID_CLIPS,
                   replay_share: float = REPLAY_SHARE) -> dict[str, int]:
    """Write the voice stage's records (see above) from an answered train manifest; returns the count of each part.
    Written once (atomically); answering the sentences takes the base LLM a few minutes."""
    if out.is_file():
        return {}
    rng = random.Random(seed)
    records = [json.loads(line) for line in train.read_text().splitlines() if line.strip()]
    chats = [r for r in records if r.get("task") in ("voice_chat", "mixed")]
    sentences = [r for r in records if r.get("task") == "asr" and r.get("language") == "en" and r.get("text")]
    said = [{"id": f"said-{r['id']}", "task": "voice_chat", "audios": r["audios"], "duration": r.get("duration"),
             "language": "en", "kind": "said", "text_question": r["text"], "answer": None}
            for r in rng.sample(sentences, min(said_clips, len(sentences)))]
    answer_questions(base, said)
    typed = []
    for i, (a, op, b) in enumerate(texts.arithmetic("train")):
        question = rng.choice(texts.ARITHMETIC_TEMPLATES).format(a=texts.number_words(a), op=op,
                                                                 b=texts.number_words(b))
        typed.append({"id": f"typed-arithmetic-{i:04d}", "task": "conversation", "audios": [],
                      "messages": [{"role": "user", "content": question},
                                   {"role": "assistant", "content": str(texts.arithmetic_answer(a, op, b))}]})
    others = [r for r in records if r.get("task") not in ("voice_chat", "mixed", "preference")]
    replay = rng.sample(others, min(len(others), int(replay_share * (len(chats) + len(said) + len(typed)))))
    rows = chats + said + typed + replay
    rng.shuffle(rows)
    write_manifest(out, rows)
    return {"voice_chat_and_mixed": len(chats), "said": len(said), "typed_arithmetic": len(typed),
            "replay": len(replay)}


# The reckon stage's material (after voice). SmolLM2-135M (as the voice stage left it) gets 25-41% of the held-out
# problems with operands 0-20 right typed, 33-44% with the equation written out for it; 400 steps of text alone (each train problem in its 3 phrasings)
# teach it the held-out problems typed (dev / test 86.9 / 81.3%) but the spoken ones barely gain (test 7.1 -> 14.3%):
# a skill learnt on text does not carry over to audio positions. So every arithmetic answer, typed or heard, first
# writes the problem as an equation: "4 × 7 = 28". Heard, the model transcribes the numbers (which it reads well)
# and then completes an equation it has written itself, as it learnt to on text. This stage trains on
# - the train split's problems typed, each in every phrasing (the test split's stay held out),
# - the train split's spoken problems, RECKON_SPOKEN times each,
# - the train split's beep counts, RECKON_SPOKEN times each, answered the same way: "beep beep beep: 3" (the CTC head
#   reads every beep of the test split's count clips as one "beep", but the LLM answered 3 of 8 right; written out,
#   the beeps come right but their number only in part: docs/demo_experiments.md, "Reckoning in writing"),
# - a replay of the other voice-chat and mixed-audio records and of every other task, so that they are kept.
RECKON_SYMBOLS = {"plus": "+", "minus": "-", "times": "×"}
RECKON_SPOKEN = 2
RECKON_REPLAY = {"chat": 600, "per_task": 100}
_PROBLEM = re.compile(r"(?<![\w-])([a-z]+) (plus|minus|times) ([a-z]+)(?![\w-])")  # not inside "twenty-one"


def equation(a: int, op: str, b: int) -> str:
    """The answer to `a op b` written as its equation, e.g. (4, "times", 7) -> "4 × 7 = 28"."""
    return f"{a} {RECKON_SYMBOLS[op]} {b} = {texts.arithmetic_answer(a, op, b)}"


def counted(n: int) -> str:
    """The answer to "How many beeps did you hear?" written as the beeps heard, e.g. 3 -> "beep beep beep: 3"."""
    return " ".join(["beep"] * n) + f": {n}"


def spoken_problem(question: str) -> tuple[int, str, int]:
    """(a, op, b) of a question like "How much is four times seven?" (operands 0-20 in words)."""
    words = {texts.number_words(n): n for n in range(21)}
    found = _PROBLEM.search(question.lower())
    if not found or found[1] not in words or found[3] not in words:
        raise ValueError(f"not an arithmetic question with operands 0-20: {question!r}")
    return words[found[1]], found[2], words[found[3]]


def reckon_manifest(train: Path, out: Path, seed: int = 0) -> dict[str, int]:
    """Write the reckon stage's records (see above) from an answered train manifest; returns the count of each part.
    Written once (atomically)."""
    if out.is_file():
        return {}
    rng = random.Random(seed)
    records = [json.loads(line) for line in train.read_text().splitlines() if line.strip()]
    typed = [{"id": f"typed-{op}-{a}-{b}-{k}", "task": "conversation", "audios": [],
              "messages": [{"role": "user", "content": template.format(a=texts.number_words(a), op=op,
                                                                        b=texts.number_words(b))},
                           {"role": "assistant", "content": equation(a, op, b)}]}
             for a, op, b in texts.arithmetic("train") for k, template in enumerate(texts.ARITHMETIC_TEMPLATES)]
    sums = [r for r in records if r.get("task") == "voice_chat" and r.get("kind") == "arithmetic"]
    spoken = [{**r, "id": f"{r['id']}-{k}", "answer": equation(*spoken_problem(r["text_question"]))}
              for r in sums for k in range(RECKON_SPOKEN)]
    beeps = [r for r in records if r.get("task") == "mixed" and r.get("kind") == "count"]
    counts = [{**r, "id": f"{r['id']}-{k}", "answer": counted(int(r["answer"]))}
              for r in beeps for k in range(RECKON_SPOKEN)]
    taught = {("voice_chat", "arithmetic"), ("mixed", "count")}
    chats = [r for r in records if r.get("task") in ("voice_chat", "mixed") and (r["task"], r.get("kind")) not in taught]
    tasks: dict[str, list[dict]] = {}
    for r in records:
        if r.get("task") not in ("voice_chat", "mixed", "preference"):
            tasks.setdefault(r["task"], []).append(r)
    replay = rng.sample(chats, min(len(chats), RECKON_REPLAY["chat"]))
    for task in sorted(tasks):  # as many of each task, so that ASR, the bulk of a world, does not crowd out the rest
        replay += rng.sample(tasks[task], min(len(tasks[task]), RECKON_REPLAY["per_task"]))
    rows = typed + spoken + counts + replay
    rng.shuffle(rows)
    write_manifest(out, rows)
    return {"typed_arithmetic": len(typed), "spoken_arithmetic": len(spoken), "spoken_counting": len(counts),
            "replay": len(replay)}


def ctc_clips(scale: float) -> int:
    """Speech and sound clips the CTC stages read (so that the head also names sounds); at scale 0.5, 12,000 of the
    26,400 (encoding them ran at ~35 clips/s on this 2-core machine)."""
    return max(200, round(24000 * scale))


def ctc_stage(base: Path, run: Path, data: dict[str, Path], scale: float, keep_head: bool = False,
              drop_blank: bool = False, encoder_layers: int = 0) -> Path:
    """Align the base model's projector by CTC (skipped once `run/ctc/final` exists; resumed after its last finished
    epoch when interrupted); returns its folder. With `keep_head` the projector keeps the CTC head (frames reach the
    LLM as posterior mixes of its rows), and with `drop_blank` the LLM attends only to its non-blank frames. With
    `encoder_layers`, the encoder's top blocks then train with the head (`AlignConfig.encoder_epochs`)."""
    cfg = AlignConfig(max_clips=ctc_clips(scale), epochs=5, sounds=True, keep_head=keep_head, drop_blank=drop_blank,
                      encoder_layers=encoder_layers)
    return _align_stage("ctc", base, run, data, cfg)


def hear_stage(start: Path, run: Path, data: dict[str, Path], scale: float, encoder_layers: int = 2,
               epochs: int = 2, clips: int | None = None) -> Path:
    """After the LLM stages: the encoder's top `encoder_layers` blocks train with the CTC head of `start` (a model
    with a kept head), by CTC on the speech and sound clips, for `epochs` (the encoder phase of `align_projector`
    alone), on `clips` of them (default `ctc_clips(scale)`). The LLM reads the head's posterior mixes of its own
    embedding rows and joint decoding scores with the head, so a head that hears better serves the trained LLM as it
    is. Skipped once `run/hear/final` exists; resumed after its last finished epoch."""
    done = (run / "hear" / "final" / "config.json").is_file()
    if not done and not AudioLMConfig.from_hf(json.loads((start / "config.json").read_text())).projector_ctc_rows:
        raise SystemExit(f"the hear stage trains a kept CTC head, and {start} has none (train with --ctc-head)")
    cfg = AlignConfig(max_clips=clips or ctc_clips(scale), epochs=0, sounds=True, keep_head=True,
                      encoder_layers=encoder_layers, encoder_epochs=epochs)
    return _align_stage("hear", start, run, data, cfg)


def _align_stage(name: str, start: Path, run: Path, data: dict[str, Path], cfg: AlignConfig) -> Path:
    """Run `align_projector` on the model of `start` into `run/name/final` (see ctc_stage, hear_stage)."""
    final = run / name / "final"
    if (final / "config.json").is_file():
        return final
    model, processor = load_audiolm(start), Processor.from_pretrained(start)
    train_utts = spoken_utterances(data["train"], processor.tokenizer, cfg.max_clips, cfg.seed, sounds=True)
    dev_utts = spoken_utterances(data["dev"], processor.tokenizer, sounds=True)
    dev_utts = random.Random(0).sample(dev_utts, min(len(dev_utts), 500))
    cache = EncoderCache(run / "encoder_cache", encoder_fingerprint(model))
    state = run / name / "state.pt"  # after every epoch: an interrupted stage resumes there
    state.parent.mkdir(parents=True, exist_ok=True)
    metrics = align_projector(model, processor, train_utts, dev_utts, cache, cfg, state_file=state)
    tmp = final.with_name("final.tmp")
    save_audiolm(model, tmp, generation_defaults=read_generation_defaults(start))
    processor.save_pretrained(tmp)
    (tmp / "ctc_align.json").write_text(json.dumps(metrics, indent=1))
    if (start / "auralm.json").is_file():  # the prompts and decoding the start folder was trained with
        shutil.copy(start / "auralm.json", tmp / "auralm.json")
    tmp.replace(final)
    state.unlink(missing_ok=True)
    state.with_name(state.name + ".tmp").unlink(missing_ok=True)
    return final


def stage_configs(start: Path, run: Path, data: dict[str, Path], n_base_rows: int, scale: float,
                  wanted: list[str], slow_projector: bool = False, step_counts: dict[str, int] | None = None,
                  ) -> tuple[list[tuple[str, list[str]]], list[str]]:
    """The wanted stages in order, the first starting from `start`, each next one from the previous one's final
    folder. `step_counts` (stage -> steps) replaces a stage's scaled step count."""
    step_counts = step_counts or {}

    def steps(n: int, stage: str) -> int:
        return step_counts.get(stage, max(2, int(n * scale)))

    lora = ["parts.llm=lora", "lora.r=16", "lora.alpha=32"]
    # After the ctc stage the projector's weights are ~0.005; at the LLM's rate Adam rewrites them within ~100 steps
    # (measured: cosine 0.40 to the aligned weights after 250 steps, and no speech read), so it moves 20x slower.
    lora += ["optim.part_lr_scale={projector: 0.05}"] if slow_projector else []
    train = f"data.train=[{{path: {data['train']}}}]"
    recipes = {
        # ASR only, on every English clip whose words are known, before the multi-task stages: the LLM learns to
        # read the aligned audio while nothing else competes for the LoRA (measured: real-speech WER 99 -> 80 in
        # 300 steps from the CTC head, where 150 steps on the multi-task model made it worse, 99 -> 133).
        "read": ["recipe=sft", f"data.train=[{{path: {data.get('read_train')}}}]", "data.tasks_as_chat=true",
                 "parts.encoder=freeze", "parts.projector=train", *lora, f"data.dev=[{data.get('read_dev')}]",
                 "data.batch_size=8", "optim.lr=1e-3", "optim.warmup_steps=20", f"steps={steps(600, 'read')}"],
        "align": ["recipe=pretrain", train, "parts.encoder=freeze", "parts.projector=train", "parts.llm=freeze",
                  "data.batch_size=8", "optim.lr=2e-3", "optim.warmup_steps=20", f"steps={steps(120, 'align')}"],
        "pretrain": ["recipe=pretrain", train, "parts.encoder=freeze", "parts.projector=train", *lora,
                     "data.batch_size=8", "optim.lr=1e-3", "optim.warmup_steps=20", f"steps={steps(1000, 'pretrain')}"],
        "sft": ["recipe=sft", train, "data.tasks_as_chat=true", "parts.encoder=freeze", "parts.projector=train", *lora,
                "data.batch_size=8", "optim.lr=5e-4", "optim.warmup_steps=10", f"steps={steps(700, 'sft')}"],
        "dpo": ["recipe=dpo", train, "parts.encoder=freeze", "parts.projector=freeze", *lora, "dpo.beta=0.1",
                "data.batch_size=8", "optim.lr=2e-4", "optim.warmup_steps=5", f"steps={steps(36, 'dpo')}"],
        # voice chat (see voice_manifest); the projector stays as the ctc stage aligned it; rank 8 keeps the
        # shipped delta within its budget
        "voice": ["recipe=sft", f"data.train=[{{path: {data.get('voice_train')}}}]", "data.tasks_as_chat=true",
                  "parts.encoder=freeze", "parts.projector=freeze", "parts.llm=lora", "lora.r=8", "lora.alpha=16",
                  "data.batch_size=8", "optim.lr=5e-4", "optim.warmup_steps=10", f"steps={steps(300, 'voice')}"],
        # arithmetic as equations (see reckon_manifest); batches of 16, about half of them typed rows
        "reckon": ["recipe=sft", f"data.train=[{{path: {data.get('reckon_train')}}}]", "data.tasks_as_chat=true",
                   "parts.encoder=freeze", "parts.projector=freeze", "parts.llm=lora", "lora.r=8", "lora.alpha=16",
                   "data.batch_size=16", "optim.lr=1e-3", "optim.warmup_steps=10", f"steps={steps(800, 'reckon')}"],
    }
    # No encoder cache here: these stages see each clip about once, and filling a cache encodes every clip.
    # bf16 autocast where the CPU (or GPU) multiplies bfloat16 natively; emulated, a training step's backward
    # pass was ~37x slower than float32 (auralm.cpu)
    common = [f"bf16={'true' if fast_bf16() else 'false'}", f"data.dev=[{data['dev']}]", "data.dev_max_batches=4", "checkpoint.every=25",
              "checkpoint.keep_last=2", "log.eval_every=100", f"parts.new_token_rows_from={n_base_rows}"]
    stages = []
    for name in STAGES:
        if name in wanted:
            # a stage's own data.dev (read) comes after the common one and wins
            stages.append((name, [f"model.path={start}", *recipes[name]]))
            start = run / name / "final"
    return stages, common


def parse_steps(text: str) -> dict[str, int]:
    """'read=600,sft=210' -> {'read': 600, 'sft': 210}; names a clear error for anything else."""
    out = {}
    for part in filter(None, text.split(",")):
        stage, _, n = part.partition("=")
        if stage not in STAGES or not n.isdigit() or int(n) < 1:
            raise SystemExit(f"--steps: {part!r} is not STAGE=N with STAGE one of {', '.join(STAGES)} and N >= 1")
        out[stage] = int(n)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--world", required=True, type=Path, help="a synthetic world made by `auralm synth --preset demo`")
    ap.add_argument("--out", default=Path("runs/demo"), type=Path)
    ap.add_argument("--scale", type=float, default=1.0, help="multiply every stage's step count")
    ap.add_argument("--stages", default="ctc,pretrain,sft,dpo",
                    help="stages in order (default: the shipped recipe); 'align,pretrain,sft,dpo' is the earlier "
                         "recipe without CTC alignment (see the README); hear runs after the LLM stages")
    ap.add_argument("--ctc-head", action="store_true",
                    help="the projector keeps the ctc stage's head: frames reach the LLM as CTC-posterior mixes of its "
                         "embedding rows (auralm's option; transformers and vLLM would ignore it); add the 'read' stage "
                         "after ctc, e.g. --stages ctc,read,pretrain,sft,dpo")
    ap.add_argument("--ctc-drop-blank", action="store_true",
                    help="with --ctc-head: the LLM attends only to frames whose most likely CTC class is not the blank "
                         "(CTC compression, auralm's option `projector_ctc_drop_blank`)")
    ap.add_argument("--ctc-encoder-layers", type=int, default=0, metavar="K",
                    help="after the ctc stage's projector epochs, train the encoder's top K blocks with its head "
                         "(2 of tiny.en's 4: held-out voice 40.3%% -> 32.7%% greedy-CTC WER, real clips 46.9%% -> 40.7%%)")
    ap.add_argument("--steps", default="", metavar="STAGE=N,...",
                    help="step counts that replace the scaled ones, e.g. read=600,pretrain=300,sft=210,dpo=10")
    ap.add_argument("--voice-said", type=int, default=SAID_CLIPS, metavar="N",
                    help="the voice stage also hears N English sentences answered by the base LLM (default none)")
    ap.add_argument("--hear-layers", type=int, default=2, metavar="K",
                    help="the hear stage trains the encoder's top K blocks with the CTC head (default 2)")
    ap.add_argument("--hear-epochs", type=int, default=2, metavar="N", help="epochs of the hear stage (default 2)")
    ap.add_argument("--hear-clips", type=int, default=None, metavar="N",
                    help="speech and sound clips the hear stage reads (default: as many as the ctc stage)")
    ap.add_argument("--from-demo", action="store_true",
                    help="start from the shipped demo model (its stages ship again), e.g. --stages hear")
    ap.add_argument("--no-pack", action="store_true")
    ap.add_argument("--pack-dir", type=Path, default=SHIPPED_DIR, help="where the shipped files are written "
                    "(default: the package's own auralm/demo/weights)")
    ap.add_argument("--merge-energy", type=float, default=None, metavar="E",
                    help="ship all LoRA stages as one low-rank update per module keeping E of its energy (e.g. 0.999)")
    ap.add_argument("--no-llm-answers", action="store_true", help="leave out voice-chat questions that have no answer")
    args = ap.parse_args(argv)
    step_counts = parse_steps(args.steps)
    wanted = args.stages.split(",")
    unknown = [w for w in wanted if w not in ("ctc", *STAGES, "hear")]
    if unknown:
        raise SystemExit(f"--stages: {', '.join(unknown)} is not a stage (ctc, {', '.join(STAGES)}, hear)")
    if args.from_demo and "ctc" in wanted:
        raise SystemExit("--from-demo goes on from the shipped model, which has its ctc stage already")
    if "hear" in wanted and not (args.from_demo or args.ctc_head or args.ctc_drop_blank):
        raise SystemExit("the hear stage trains a kept CTC head: add --ctc-head (or go on from the shipped model with "
                         "--from-demo)")
    run = args.out.resolve()
    run.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    t0 = time.time()
    base = run / "base"
    if not (base / "config.json").is_file():
        save_base(base)
    n_base_rows = Processor.from_pretrained(base).tokenizer.get_vocab_size(with_added_tokens=False)
    world = args.world.resolve()
    data = {"train": run / "train.jsonl", "dev": run / "dev.jsonl"}
    for split in ("train", "dev"):
        filled = fill_answers(base, world / f"{split}.jsonl", data[split], answer=not args.no_llm_answers)
        print(f"[{time.time() - t0:6.0f}s] {split}: answered {filled} voice-chat questions with the base LLM", flush=True)
    if "read" in wanted:
        data["read_train"], data["read_dev"] = run / "read_train.jsonl", run / "read_dev.jsonl"
        n = reading_manifest(world / "train.jsonl", data["read_train"])
        reading_manifest(world / "dev.jsonl", data["read_dev"], tasks=("asr",))
        print(f"[{time.time() - t0:6.0f}s] read: {n} English clips with known words", flush=True)
    if "voice" in wanted:
        data["voice_train"] = run / "voice_train.jsonl"
        parts = voice_manifest(data["train"], data["voice_train"], base, said_clips=args.voice_said)
        print(f"[{time.time() - t0:6.0f}s] voice: {parts or 'made earlier'}", flush=True)
    if "reckon" in wanted:
        data["reckon_train"] = run / "reckon_train.jsonl"
        parts = reckon_manifest(data["train"], data["reckon_train"])
        print(f"[{time.time() - t0:6.0f}s] reckon: {parts or 'made earlier'}", flush=True)
    # The manifests name audio relative to the world folder; the filled copies live in the run folder.
    if not (run / "audio").exists():
        (run / "audio").symlink_to(world / "audio")
    start, prior, meta = base, [], {}
    if args.from_demo:  # go on from the shipped model: its LoRA stages ship again before this run's
        start, prior = demo_model_dir(), shipped_stages()
        meta = json.loads((SHIPPED_DIR / META_NAME).read_text())
    ctc_head = "ctc" in wanted and (args.ctc_head or args.ctc_drop_blank)
    if "ctc" in wanted:
        print(f"[{time.time() - t0:6.0f}s] stage ctc", flush=True)
        start = ctc_stage(base, run, data, args.scale, keep_head=ctc_head,
                          drop_blank=args.ctc_drop_blank, encoder_layers=args.ctc_encoder_layers)
    stages, common = stage_configs(start, run, data, n_base_rows, args.scale,
                                   [w for w in wanted if w not in ("ctc", "hear")],
                                   slow_projector="ctc" in wanted, step_counts=step_counts)
    adapters = []
    for name, overrides in stages:
        final = run / name / "final"
        if not (final / "config.json").is_file():
            cfg = load_config(None, [f"out_dir={run / name}", *common, *overrides])
            print(f"[{time.time() - t0:6.0f}s] stage {name}", flush=True)
            train(cfg)
        if name in CHAT_STAGES and not (final / "auralm.json").is_file():
            (final / "auralm.json").write_text(json.dumps(chat_options(ctc_head), indent=2))
        if (run / name / "adapter").is_dir():
            adapters.append(run / name / "adapter")
        start = final
    if "hear" in wanted:
        print(f"[{time.time() - t0:6.0f}s] stage hear", flush=True)
        start = hear_stage(start, run, data, args.scale, args.hear_layers, args.hear_epochs, args.hear_clips)
    print(f"[{time.time() - t0:6.0f}s] training done", flush=True)
    if not args.no_pack and (stages or "hear" in wanted):
        steps = {n: int(next(o for o in ov if o.startswith("steps=")).split("=")[1]) for n, ov in stages}
        meta["trained_stages"] = [*meta.get("trained_stages", []), *(["ctc"] if "ctc" in wanted else []),
                                  *(n for n, _ in stages), *(["hear"] if "hear" in wanted else [])]
        meta["stage_steps"] = {**meta.get("stage_steps", {}), **steps}
        meta["prompts"] = meta.get("prompts") or chat_options(ctc_head)
        if args.from_demo:  # how the model it went on from was made, then this run, and each such run's wall time
            command = "python -m auralm.demo.train " + " ".join(sys.argv[1:] if argv is None else argv)
            meta["recipe"] = f"{meta['recipe']}; then {command}" if meta.get("recipe") else command
            meta["from_demo_seconds"] = [*meta.get("from_demo_seconds", []), round(time.time() - t0)]
        else:
            meta["train_seconds"] = round(time.time() - t0)
        for name in ("ctc", "hear"):
            if name in wanted:
                found = json.loads((run / name / "final" / "ctc_align.json").read_text())
                meta[name] = {k: found[k] for k in ("clips", "steps", "dev_wer", "dev_sound_wer") if k in found}
        info = pack(start, adapters, meta, out_dir=args.pack_dir, merge_energy=args.merge_energy, stages=prior)
        print(f"packed into {args.pack_dir}: {info}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
