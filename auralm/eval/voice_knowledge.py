"""Does voice chat keep the LLM's knowledge? Spoken general questions answered by the audio model, against the
answer its base LLM gives to the same question typed.

    python -m auralm.eval.voice_knowledge --manifest WORLD/test.jsonl --llm BASE_DIR MODEL_DIR [--limit N]

The rows are the manifest's voice-chat questions of kind "general" (no fixed answer). The reference is the base
model folder's answer to the text question with the same instruction the demo recipe trains with (its first two
sentences); the hypothesis is MODEL_DIR's answer to the audio alone (a user turn with only the clip). Reported:
exact match after lowercasing and removing punctuation, and chrF (sacrebleu) over all rows.

For the voice-chat questions with a numeric answer (spoken arithmetic) it also reports how often the base LLM gets
the typed question right and how often the audio model gets the spoken one right (`answers_match`, as the
synthetic suite scores them): the text model's own accuracy is the ceiling that voice chat inherits.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

from auralm.data.manifest import load_manifest
from auralm.eval.tasks import NUMBER, answers_match
from auralm.infer.api import AudioChat

TEXT_QA_SUFFIX = "Answer in one or two short sentences."


def first_sentences(text: str, n: int = 2) -> str:
    """The first `n` sentences of an answer, ending with a full stop if it had none."""
    parts = text.replace("\n", " ").split(". ")
    out = ". ".join(parts[:n]).strip()
    return out if out.endswith((".", "!", "?")) else out + "."


def llm_answers(chat, questions: list[str], batch: int = 16, max_new_tokens: int = 48) -> list[str]:
    """The text model's answers to typed questions (what the demo recipe trains the spoken form to say)."""
    out = []
    for i in range(0, len(questions), batch):
        convs = [[{"role": "user", "content": q + " " + TEXT_QA_SUFFIX}] for q in questions[i : i + batch]]
        out += [first_sentences(a) for a in chat.chat_batch(convs, max_new_tokens=max_new_tokens)]
    return out


def spoken_answers(chat, audios: list[str], batch: int = 8, max_new_tokens: int = 48) -> list[str]:
    """The audio model's answers to user turns that hold only the spoken question."""
    out = []
    for i in range(0, len(audios), batch):
        convs = [[{"role": "user", "content": [{"type": "audio", "audio": a}]}] for a in audios[i : i + batch]]
        out += chat.chat_batch(convs, max_new_tokens=max_new_tokens)
    return out


def _norm(text: str) -> str:
    return " ".join(re.sub(r"[^\w\s]", " ", text.lower()).split())


def score(references: list[str], hypotheses: list[str]) -> dict[str, float]:
    """{'rows', 'exact' (%), 'chrf'} of answers against references."""
    import sacrebleu  # the optional [eval] extra; the demo recipe imports this module for `llm_answers` only

    exact = sum(_norm(r) == _norm(h) for r, h in zip(references, hypotheses))
    return {"rows": len(references), "exact": 100.0 * exact / max(1, len(references)),
            "chrf": sacrebleu.corpus_chrf(hypotheses, [references]).score}  # fmt: skip


def numeric_accuracy(records: list[dict], answers: list[str]) -> float:
    """% of answers whose last number is the record's numeric answer."""
    return 100.0 * sum(answers_match(r["answer"], a) for r, a in zip(records, answers)) / max(1, len(records))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model", type=Path, help="the audio model folder")
    ap.add_argument("--llm", required=True, type=Path, help="the base model folder whose text answers are the reference")
    ap.add_argument("--manifest", required=True, type=Path, help="a manifest with voice-chat rows (held-out split)")
    ap.add_argument("--limit", type=int, help="only the first N general (and N numeric) questions")
    ap.add_argument("--json", type=Path, help="also write every row and the scores here")
    args = ap.parse_args(argv)
    try:
        records, _ = load_manifest(args.manifest)
        chats = [r for r in records if r["task"] == "voice_chat"]
        rows = [r for r in chats if r.get("kind") == "general"][: args.limit]
        numeric = [r for r in chats if r.get("answer") and NUMBER.fullmatch(str(r["answer"]).strip())][: args.limit]
        if not rows:
            raise ValueError(f"{args.manifest} has no voice-chat rows of kind 'general'")
        llm, model = AudioChat.from_folder(args.llm), AudioChat.from_folder(args.model)
        references = llm_answers(llm, [r["text_question"] for r in rows])
        hypotheses = spoken_answers(model, [r["audios"][0] for r in rows])
        typed = llm_answers(llm, [r["text_question"] for r in numeric])
        spoken = spoken_answers(model, [r["audios"][0] for r in numeric])
    except (OSError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    result = score(references, hypotheses)
    print(f"{result['rows']} spoken general questions: exact {result['exact']:.1f}%, chrF {result['chrf']:.1f}")
    if numeric:
        result["numeric"] = {"rows": len(numeric), "typed_llm_accuracy": numeric_accuracy(numeric, typed),
                             "spoken_accuracy": numeric_accuracy(numeric, spoken)}  # fmt: skip
        print(f"{len(numeric)} questions with a numeric answer: base LLM typed "
              f"{result['numeric']['typed_llm_accuracy']:.1f}%, audio model spoken {result['numeric']['spoken_accuracy']:.1f}%")
    if args.json:
        items = [{"id": r["id"], "question": r["text_question"], "reference": ref, "answer": hyp}
                 for r, ref, hyp in zip(rows, references, hypotheses)]  # fmt: skip
        items += [{"id": r["id"], "question": r["text_question"], "reference": r["answer"], "typed_answer": t,
                   "answer": a} for r, t, a in zip(numeric, typed, spoken)]  # fmt: skip
        args.json.write_text(json.dumps({"scores": result, "rows": items}, indent=1, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
