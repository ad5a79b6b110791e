"""Build `sentences_wide_en.txt`: one sentence for each of thousands of common English words the other pools lack,
written by the demo's base LLM (SmolLM2-135M-Instruct, Apache-2.0) so that the words the LLM knows are heard.

Run once by a maintainer, never at generation time (the generator reads only the text file):

    apt-get install wamerican       # /usr/share/dict/american-english, the dictionary that keeps real words
    python scripts/build_wide_sentences.py BASE_FOLDER /usr/share/dict/american-english > \
        auralm/synth/data/sentences_wide_en.txt
    # second pass (world version 5): the next words, names and 3-letter words too, appended
    python scripts/build_wide_sentences.py BASE_FOLDER /usr/share/dict/american-english --extend >> \
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

# Words asked for per pass, the most common first. --extend, the second pass: the words no line says yet, with
# capitalised dictionary words (names, nations, months) and 3-letter words, which the first pass left out.
WORDS = 9000
BATCH = 96
# The second prompt asks again for the words the first one's sentences do not say (it keeps ~35% of them).
PROMPTS = ('Write one short sentence that uses the word "{word}".', 'Use the word "{word}" in a sentence.')
MAX_WORDS = 20
# A sentence sharing this many consecutive words with a real-speech eval transcript is dropped (held out).
EVAL_NGRAM = 5
# A small LLM's claims about whole peoples or faiths can be false or offensive ("...crucified by the Jews"): a sentence
# naming such a group in the plural is dropped (added with the second pass and applied to both passes' lines).
GROUPS = re.compile(r"\b(jews|muslims|arabs|christians|israelites|catholics|protestants|hindus|sikhs|buddhists|"
                    r"atheists|blacks|whites|gays|lesbians|races|tribes|immigrants|natives|negroes)\b")


def words_of(text: str) -> list[str]:
    return re.findall(r"[a-z']+", text.lower())


def ngrams(words: list[str], n: int) -> set[tuple[str, ...]]:
    return {tuple(words[i : i + n]) for i in range(len(words) - n + 1)}


def wanted_words(tokenizer, dictionary: set[str], known: set[str], extend: bool = False) -> list[str]:
    """Dictionary words that are one word-start token, in token-id order, not yet in `known` (lower case): lower-case
    words of 4+ letters; with `extend`, also of 3 letters and capitalised ones (the dictionary's own spelling)."""
    shape = r"[a-z]{3,}|[A-Z][a-z]{2,}" if extend else r"[a-z]{4,}"
    out = []
    for i in range(tokenizer.get_vocab_size()):
        token = tokenizer.id_to_token(i) or ""
        word = token[1:]
        if token.startswith("Ġ") and re.fullmatch(shape, word) and word in dictionary and word.lower() not in known:
            out.append(word)
    return out[:WORDS]


def keep(reply: str, word: str, held_out: set[tuple[str, ...]]) -> str | None:
    """The reply's first sentence when it is plain, uses `word`, says nothing about words or sentences, names no
    GROUPS and shares no EVAL_NGRAM-gram with an eval transcript; else None."""
    quoted = re.search(r':\s*"(.+)', reply)  # 'A sentence that uses the word "x" is: "The pub was ..."'
    text = quoted.group(1) if quoted else reply
    first = re.split(r"(?<=[.!?])\s", text.strip())[0]
    s = clean(first)
    if s is None or len(s.split()) > MAX_WORDS:
        return None
    ws = words_of(s)
    if word.lower() not in ws or {"word", "sentence", "sentences", "words"} & set(ws):
        return None
    if ngrams(ws, EVAL_NGRAM) & held_out or GROUPS.search(s.lower()):
        return None
    return s


def main(base: str, dictionary_file: str, extend: bool = False) -> None:
    chat = AudioChat.from_folder(base)
    entries = {w.strip() for w in Path(dictionary_file).read_text().splitlines()}
    dictionary = {w for w in entries if w.islower() or (extend and w[:1].isupper() and w[1:].islower())}
    pools = (*texts.all_sentences(), *everyday.all_everyday(), *(texts.all_wide() if extend else ()))
    known = {w for s in pools for w in words_of(s)}
    held_out = set().union(*(ngrams(words_of(c.reference), EVAL_NGRAM) for c in CLIPS))
    words = wanted_words(chat.processor.tokenizer, dictionary, known, extend)
    seen: set[str] = {s.lower() for s in texts.all_wide()} if extend else set()
    said: set[str] = set()  # the words of the sentences kept so far
    for prompt in PROMPTS[:1] if extend else PROMPTS:  # each asks only for the words no kept sentence says yet
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
    args = [a for a in sys.argv[1:] if a != "--extend"]
    main(*args, extend="--extend" in sys.argv[1:])
