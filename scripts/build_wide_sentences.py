"""Build `sentences_wide_en.txt`: one sentence for each of thousands of common English words the other pools lack,
written by the demo's base LLM (SmolLM2-135M-Instruct, Apache-2.0) so that the words the LLM knows are heard.

Run once by a maintainer, never at generation time (the generator reads only the text file):

    apt-get install wamerican       # /usr/share/dict/american-english, the dictionary that keeps real words
    python scripts/build_wide_sentences.py BASE_FOLDER /usr/share/dict/american-english > \
        auralm/synth/data/sentences_wide_en.txt

BASE_FOLDER is an assembled demo base model (`auralm.demo.base`), whose tokenizer also ranks the words: a BPE
vocabulary lists its merges roughly from frequent to rare, so the word-start tokens (`Ġword`) in id order are
common words first. Decoding is greedy, so the same base gives the same file. See auralm/synth/data/SOURCES.md for the filters.
"""

import re
import sys
from pathlib import Path

from auralm.eval.real_speech import CLIPS
from auralm.infer.api import AudioChat
from auralm.synth import everyday, texts

# The sentences are cleaned by the book sentences' rules (auralm/synth/data/build_sentences.py). This script lives
# outside the package because it runs the model (infer) and reads the eval's transcripts, above synth's tier.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "auralm" / "synth" / "data"))
from build_sentences import clean

WORDS = 9000  # words asked for, the most common first
BATCH = 96
# The second prompt asks again for the words the first one's sentences do not say (it keeps ~35% of them).
PROMPTS = ('Write one short sentence that uses the word "{word}".', 'Use the word "{word}" in a sentence.')
MAX_WORDS = 20
# A sentence sharing this many consecutive words with a real-speech eval transcript is dropped (held out).
EVAL_NGRAM = 5


def words_of(text: str) -> list[str]:
    return re.findall(r"[a-z']+", text.lower())


def ngrams(words: list[str], n: int) -> set[tuple[str, ...]]:
    return {tuple(words[i : i + n]) for i in range(len(words) - n + 1)}


def wanted_words(tokenizer, dictionary: set[str], known: set[str]) -> list[str]:
    """Dictionary words of 4+ letters that are one word-start token, in token-id order, not yet in `known`."""
    out = []
    for i in range(tokenizer.get_vocab_size()):
        token = tokenizer.id_to_token(i) or ""
        word = token[1:]
        if token.startswith("Ġ") and re.fullmatch(r"[a-z]{4,}", word) and word in dictionary and word not in known:
            out.append(word)
    return out[:WORDS]


def keep(reply: str, word: str, held_out: set[tuple[str, ...]]) -> str | None:
    """The reply's first sentence when it is plain, uses `word`, says nothing about words or sentences and
    shares no EVAL_NGRAM-gram with an eval transcript; else None."""
    quoted = re.search(r':\s*"(.+)', reply)  # 'A sentence that uses the word "x" is: "The pub was ..."'
    text = quoted.group(1) if quoted else reply
    first = re.split(r"(?<=[.!?])\s", text.strip())[0]
    s = clean(first)
    if s is None or len(s.split()) > MAX_WORDS:
        return None
    ws = words_of(s)
    if word not in ws or {"word", "sentence", "sentences", "words"} & set(ws):
        return None
    if ngrams(ws, EVAL_NGRAM) & held_out:
        return None
    return s


def main(base: str, dictionary_file: str) -> None:
    chat = AudioChat.from_folder(base)
    dictionary = {w.strip() for w in Path(dictionary_file).read_text().splitlines() if w.strip().islower()}
    known = {w for s in (*texts.all_sentences(), *everyday.all_everyday()) for w in words_of(s)}
    held_out = set().union(*(ngrams(words_of(c.reference), EVAL_NGRAM) for c in CLIPS))
    words = wanted_words(chat.processor.tokenizer, dictionary, known)
    seen: set[str] = set()
    said: set[str] = set()  # the words of the sentences kept so far
    for prompt in PROMPTS:  # each prompt asks only for the words no kept sentence says yet
        todo = [w for w in words if w not in said]
        for i in range(0, len(todo), BATCH):
            batch = todo[i : i + BATCH]
            convs = [[{"role": "user", "content": prompt.format(word=w)}] for w in batch]
            for word, reply in zip(batch, chat.chat_batch(convs, max_new_tokens=36)):
                s = keep(reply, word, held_out)
                if s and s.lower() not in seen:
                    seen.add(s.lower())
                    said.update(words_of(s))
                    print(s, flush=True)
            print(f"{min(i + BATCH, len(todo))}/{len(todo)} words, {len(seen)} sentences", file=sys.stderr, flush=True)


if __name__ == "__main__":
    main(*sys.argv[1:])
