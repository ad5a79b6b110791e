"""What every importer shares: the result type, the layout error, and reading audio durations and tables."""

from __future__ import annotations

import csv
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path


class LayoutError(ValueError):
    """SRC does not hold the dataset's published layout (the message says what was expected)."""


@dataclass
class Built:
    """An importer's output: manifest records per subset, and the entries it had to leave out."""

    subsets: dict[str, list[dict]] = field(default_factory=lambda: defaultdict(list))  # subset -> records
    problems: list[str] = field(default_factory=list)  # "what: why" for each entry left out

    def add(self, subset: str, record: dict) -> None:
        self.subsets[subset].append(record)


def audio_seconds(path: Path, built: Built) -> float | None:
    """The duration of an audio file from its header, or None (with a problem noted) when it is missing,
    unreadable or empty."""
    # Imported here: auralm.audio loads torch, and `auralm --help` builds the `data import` parser from this package.
    from auralm.audio import AudioError, audio_duration

    if not path.is_file():
        built.problems.append(f"{path}: audio file not found")
        return None
    try:
        seconds = audio_duration(path)
    except AudioError as err:
        built.problems.append(f"{path}: {err}")
        return None
    if seconds <= 0:
        built.problems.append(f"{path}: the audio is empty")
        return None
    return round(seconds, 4)


def read_table(
    path: Path, delimiter: str = ",", header: bool = True
) -> list[dict[str, str]] | list[list[str]]:
    """Rows of a CSV/TSV file (dicts keyed by the header, or lists without one). Quotes are honoured in CSV;
    TSV fields are taken literally (Common Voice and CoVoST sentences contain quote characters)."""
    quoting = csv.QUOTE_NONE if delimiter == "\t" else csv.QUOTE_MINIMAL
    with open(path, encoding="utf-8-sig", newline="") as f:
        if header:
            return list(csv.DictReader(f, delimiter=delimiter, quoting=quoting))
        return list(csv.reader(f, delimiter=delimiter, quoting=quoting))


def require_columns(path: Path, rows: list[dict], columns: tuple[str, ...]) -> None:
    if rows and not set(columns) <= set(rows[0]):
        missing = sorted(set(columns) - set(rows[0]))
        raise LayoutError(f"{path}: missing column(s) {missing}; found {sorted(rows[0])}")


def language_code(code: str) -> str:
    """A dataset's language code as auralm writes it: lowercase ISO 639-1 where one exists ("zh-CN" -> "zh",
    "sv-SE" -> "sv", "cmn" -> "zh"); Cantonese stays "yue"."""
    base = code.replace("_", "-").split("-")[0].lower()
    return {"cmn": "zh"}.get(base, base)
