"""The Qwen-Audio (v1) tokenizer: tiktoken byte-level BPE over `qwen.tiktoken`, plus 3,522 special tokens.

Built from the published rule (fact sheet §4.2), not from the reference code:

- regular tokens: the `qwen.tiktoken` file, one `base64(token bytes) rank` pair per line (151,643 lines in the
  released folders); a token's id is its rank;
- text is NFC-normalised, then split by `PATTERN` and merged by tiktoken;
- special tokens take the ids after the last rank, in this order: `<|endoftext|>`, `<|im_start|>`, `<|im_end|>`,
  `<|extra_0|>` ... `<|extra_204|>`, then the audio set `AUDIO_SPECIALS` (the audio pad, the task, language and
  time tags, ..., and `<audio>` / `</audio>` last). With the released vocabulary that puts `<|endoftext|>` at
  151643, `<|startoftranscript|>` at 151852, `<|0.00|>` at 151871 and `<audio>` at 155163 (= config
  `audio.audio_start_id`);
- `decode(skip_special_tokens=True)` keeps ids below `<|endoftext|>` only, so tags and time tokens go too.

A model folder ships `qwen.tiktoken`; `ranks_from_byte_level_vocab` rebuilds the same ranks from a Qwen2
`tokenizer.json` vocabulary (the Qwen2 BPE is the v1 BPE in byte-level spelling; auralm's tests check published
v1 ids against it when the pinned file is available).
"""

from __future__ import annotations

import base64
import unicodedata
from collections.abc import Collection, Iterable
from pathlib import Path

VOCAB_FILE = "qwen.tiktoken"

# The pre-tokenizer split (tiktoken syntax): contractions, letters with one leading non-letter, single digits,
# punctuation runs, newlines, spaces.
PATTERN = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""
)

ENDOFTEXT, IM_START, IM_END = "<|endoftext|>", "<|im_start|>", "<|im_end|>"
AUDIO_PAD = "[[[AUDIO:modality]]]"  # one per audio embedding inside an <audio>...</audio> span
AUDIO_START, AUDIO_END = "<audio>", "</audio>"
LANGUAGES = ("en", "zh", "de", "es", "ko", "fr", "ja", "it")  # the eight speech languages, in id order

# The audio special tokens in id order (fact sheet §4.2 table).
AUDIO_SPECIALS: tuple[str, ...] = (
    AUDIO_PAD,
    "<|startoftranscript|>", "<|startofanalysis|>",  # transcription tag: speech-to-text vs everything else
    "<|translate|>", "<|transcribe|>", "<|caption|>", "<|keyword|>",  # task tags
    "<|unknown|>", *(f"<|{lang}|>" for lang in LANGUAGES), "<|zh_tr|>",  # audio / text language tags
    "<|notimestamps|>", "<|sil|>", "<|timestamps|>",
    *(f"<|{i // 100}.{i % 100:02d}|>" for i in range(3001)),  # time tokens 0.00 ... 30.00 s, 0.01 s apart
    "<|caption_audiocaps|>", "<|caption_clotho|>", "<|audioset_ontology|>", "<|caption_plain|>",
    "<|itn|>", "<|wo_itn|>",
    "<|startofentityvalue|>", "<|endofentityvalue|>", "<|startofentitytype|>", "<|endofentitytype|>",
    "<|named_entity_recognition|>", "<|audio_grounding|>", "<|startofword|>", "<|endofword|>", "<|delim|>",
    "<|emotion_recognition|>", "<|music_description|>", "<|note_analysis|>",
    "<|pitch|>", *(f"<|midi_pitch_{i}|>" for i in range(128)),
    "<|velocity|>", *(f"<|midi_velocity_{i}|>" for i in range(128)),
    "<|sonic|>", "<|instrument|>", "<|speaker_meta|>", "<|song_meta|>", "<|question|>", "<|answer|>", "<|choice|>",
    "<|scene|>", "<|event|>", "<|vocal_classification|>", "<|speech_understanding|>", "<|scenario|>", "<|action|>",
    "<|entities|>", "<|speech_edit|>",
    AUDIO_START, AUDIO_END,
)  # fmt: skip
SPECIAL_TOKENS: tuple[str, ...] = (ENDOFTEXT, IM_START, IM_END, *(f"<|extra_{i}|>" for i in range(205)),
                                   *AUDIO_SPECIALS)  # fmt: skip
assert len(SPECIAL_TOKENS) == 3522 and len(set(SPECIAL_TOKENS)) == 3522


class QwenV1TokenizerError(ValueError):
    """A `qwen.tiktoken` file or a vocabulary that cannot be the v1 BPE."""


def read_tiktoken(path: str | Path) -> dict[bytes, int]:
    """`qwen.tiktoken` -> {token bytes: rank}. Ranks must be 0..n-1 without gaps (ids are ranks)."""
    ranks: dict[bytes, int] = {}
    for n, line in enumerate(Path(path).read_bytes().splitlines(), start=1):
        if not line.strip():
            continue
        parts = line.split()
        try:
            token, rank = base64.b64decode(parts[0], validate=True), int(parts[1])
        except (IndexError, ValueError):
            raise QwenV1TokenizerError(f"{path}:{n}: expected 'base64-token rank', got {line[:60]!r}") from None
        ranks[token] = rank
    _check_ranks(ranks, str(path))
    return ranks


def write_tiktoken(ranks: dict[bytes, int], path: str | Path) -> None:
    """The inverse of `read_tiktoken`: one `base64 rank` line per token, in rank order."""
    _check_ranks(ranks, "ranks")
    lines = (base64.b64encode(t).decode("ascii") + f" {r}\n" for t, r in sorted(ranks.items(), key=lambda x: x[1]))
    Path(path).write_text("".join(lines), encoding="ascii")


def _byte_level_alphabet() -> dict[str, int]:
    """GPT-2's byte-level spelling: the printable character that stands for each byte value."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars, extra = {}, 0
    for b in range(256):
        if b in printable:
            chars[chr(b)] = b
        else:
            chars[chr(256 + extra)] = b
            extra += 1
    return chars


def ranks_from_byte_level_vocab(vocab: dict[str, int]) -> dict[bytes, int]:
    """A `tokenizers` byte-level BPE vocabulary {spelled token: id} -> tiktoken ranks {bytes: id}."""
    alphabet = _byte_level_alphabet()
    try:
        ranks = {bytes(alphabet[ch] for ch in token): i for token, i in vocab.items()}
    except KeyError as err:
        raise QwenV1TokenizerError(f"vocabulary token with character {err} is not byte-level spelled") from None
    _check_ranks(ranks, "vocabulary")
    return ranks


def _check_ranks(ranks: dict[bytes, int], where: str) -> None:
    if not ranks:
        raise QwenV1TokenizerError(f"{where} holds no tokens")
    if sorted(ranks.values()) != list(range(len(ranks))):
        raise QwenV1TokenizerError(f"{where}: ranks must be 0..{len(ranks) - 1} without gaps or repeats")
    missing = [b for b in range(256) if bytes([b]) not in ranks]
    if missing:
        raise QwenV1TokenizerError(f"{where} lacks {len(missing)} single-byte token(s), e.g. byte {missing[0]}")


class QwenV1Tokenizer:
    """tiktoken over the v1 ranks and special tokens. Ids past the tokenizer (the embedding is padded to more
    rows) decode to nothing."""

    def __init__(self, ranks: dict[bytes, int]):
        import tiktoken  # optional dependency: `pip install auralm[qwen-audio]`

        _check_ranks(ranks, "ranks")
        self.ranks = ranks
        self.special_ids = {tok: len(ranks) + i for i, tok in enumerate(SPECIAL_TOKENS)}
        self.encoding = tiktoken.Encoding(
            "qwen_v1", pat_str=PATTERN, mergeable_ranks=ranks, special_tokens=self.special_ids
        )
        self._id_to_bytes = {i: t for t, i in ranks.items()}
        self._id_to_special = {i: t for t, i in self.special_ids.items()}
        self.eod_id = self.special_ids[ENDOFTEXT]
        self.im_start_id, self.im_end_id = self.special_ids[IM_START], self.special_ids[IM_END]
        self.audio_start_id, self.audio_end_id = self.special_ids[AUDIO_START], self.special_ids[AUDIO_END]
        self.audio_pad_id = self.special_ids[AUDIO_PAD]

    @classmethod
    def from_file(cls, path: str | Path) -> QwenV1Tokenizer:
        return cls(read_tiktoken(path))

    def save(self, folder: str | Path) -> None:
        write_tiktoken(self.ranks, Path(folder) / VOCAB_FILE)

    @property
    def n_vocab(self) -> int:
        """Regular + special tokens (155,165 with the released file)."""
        return len(self.ranks) + len(SPECIAL_TOKENS)

    # ---- ids ---------------------------------------------------------------------------------------------
    def token_to_id(self, token: str) -> int | None:
        """A special token's id, or a regular token's given as its UTF-8 text; None if it is neither."""
        if token in self.special_ids:
            return self.special_ids[token]
        return self.ranks.get(token.encode("utf-8"))

    def id_to_token(self, i: int) -> str | None:
        """A special token's string, or a regular token's bytes decoded as UTF-8 (replacement characters where
        the token holds part of a character)."""
        if i in self._id_to_special:
            return self._id_to_special[i]
        t = self._id_to_bytes.get(i)
        return None if t is None else t.decode("utf-8", errors="replace")

    # ---- text --------------------------------------------------------------------------------------------
    def encode(self, text: str, allowed_special: Collection[str] | str = "all") -> list[int]:
        """NFC-normalised text -> ids. Special-token strings in `allowed_special` (default: all, as the reference)
        become their ids; any other special-token string is encoded as plain text."""
        allowed = allowed_special if allowed_special == "all" else set(allowed_special)
        return self.encoding.encode(unicodedata.normalize("NFC", text), allowed_special=allowed, disallowed_special=())

    def decode(self, ids: Iterable[int], skip_special_tokens: bool = False, errors: str = "replace") -> str:
        """ids -> text; skip_special_tokens keeps regular tokens only (ids below `<|endoftext|>`)."""
        limit = self.eod_id if skip_special_tokens else self.n_vocab
        return self.encoding.decode([int(i) for i in ids if 0 <= int(i) < limit], errors=errors)
