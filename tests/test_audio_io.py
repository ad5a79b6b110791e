"""load_audio: every common format and source kind, resampling, and the bad inputs a new user would try."""

from __future__ import annotations

import io
import shutil
import subprocess
import time
import tracemalloc
from pathlib import Path

import av
import numpy as np
import pytest
import soundfile as sf
import torch

from auralm.audio import SAMPLE_RATE, AudioError, audio_duration, load_audio

TONE_HZ = 440.0
TONE_SECONDS = 1.5


def tone(freq: float, sr: int, seconds: float, amplitude: float = 0.5) -> np.ndarray:
    t = np.arange(round(sr * seconds)) / sr
    return (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def dominant_frequency(x: np.ndarray, sr: int) -> float:
    """Peak of the windowed spectrum, refined by parabolic interpolation (accurate to a small fraction of a bin)."""
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    k = int(np.argmax(spectrum[1:-1])) + 1
    a, b, c = np.log(spectrum[k - 1 : k + 2] + 1e-20)
    return (k + 0.5 * (a - c) / (a - 2 * b + c)) * sr / len(x)


def tone_amplitude(x: np.ndarray, sr: int, freq: float) -> float:
    """Amplitude of the sinusoid at `freq` (projection on sin and cos)."""
    t = np.arange(len(x)) / sr
    return float(
        np.hypot(2 * np.mean(x * np.sin(2 * np.pi * freq * t)), 2 * np.mean(x * np.cos(2 * np.pi * freq * t)))
    )


def encode_with_pyav(path: Path, x: np.ndarray, sr: int, container: str, codec: str) -> None:
    with av.open(str(path), "w", format=container) as out:
        stream = out.add_stream(codec, rate=sr, layout="mono")
        frame = av.AudioFrame.from_ndarray(x[None, :], format="flt", layout="mono")
        frame.sample_rate = sr
        for packet in stream.encode(frame):
            out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)


def write_fixture(path: Path, x: np.ndarray, sr: int) -> None:
    """Writes `x` in the format named by the file suffix."""
    kind = path.suffix[1:]
    if kind in ("wav", "flac", "mp3"):
        sf.write(path, x, sr, format=kind.upper())
    elif kind in ("ogg", "opus"):
        sf.write(path, x, sr, format="OGG", subtype="VORBIS" if kind == "ogg" else "OPUS")
    elif kind == "m4a":
        encode_with_pyav(path, x, sr, "ipod", "aac")
    elif kind == "webm":
        encode_with_pyav(path, x, sr, "webm", "libopus")
    else:
        raise AssertionError(kind)


def need_tool(tool: str) -> str:
    found = shutil.which(tool)
    if found is None:
        pytest.skip(f"the {tool} command-line tool is not installed (apt-get install {tool})")
    return found


# ---------------------------------------------------------------- formats and sources


@pytest.mark.parametrize("kind", ["wav", "flac", "ogg", "opus", "mp3", "m4a", "webm"])
def test_every_format_round_trips_a_tone(tmp_path: Path, kind: str) -> None:
    sr = 48000  # opus only encodes at 48 kHz (and a few lower rates); every file is resampled to 16 kHz
    path = tmp_path / f"tone.{kind}"
    write_fixture(path, tone(TONE_HZ, sr, TONE_SECONDS), sr)
    x = load_audio(path)
    assert x.dtype == np.float32 and x.ndim == 1
    # Lossy codecs add priming/padding samples (aac up to ~2048 at 48 kHz); the tone itself must survive.
    assert abs(len(x) / SAMPLE_RATE - TONE_SECONDS) < 0.05
    assert abs(dominant_frequency(x, SAMPLE_RATE) - TONE_HZ) < 1.0
    assert 0.4 < tone_amplitude(x, SAMPLE_RATE, TONE_HZ) < 0.55


@pytest.mark.parametrize("kind", ["wav", "flac"])
def test_lossless_files_load_exactly(tmp_path: Path, kind: str) -> None:
    x = np.random.default_rng(0).uniform(-0.9, 0.9, 20001).astype(np.float32)
    path = tmp_path / f"noise.{kind}"
    sf.write(path, x, SAMPLE_RATE, subtype="PCM_16")
    np.testing.assert_allclose(load_audio(path), x, atol=1 / 32768)


def test_float_wav_is_bit_exact(tmp_path: Path) -> None:
    x = np.random.default_rng(1).uniform(-1, 1, 12345).astype(np.float32)
    sf.write(tmp_path / "f.wav", x, SAMPLE_RATE, subtype="FLOAT")
    np.testing.assert_array_equal(load_audio(tmp_path / "f.wav"), x)


@pytest.mark.parametrize("kind", ["flac", "webm"])
def test_bytes_and_file_objects_match_the_path(tmp_path: Path, kind: str) -> None:
    path = tmp_path / f"tone.{kind}"
    write_fixture(path, tone(TONE_HZ, 48000, 0.5), 48000)
    expected = load_audio(path)
    data = path.read_bytes()
    np.testing.assert_array_equal(load_audio(data), expected)
    np.testing.assert_array_equal(load_audio(bytearray(data)), expected)
    np.testing.assert_array_equal(load_audio(io.BytesIO(data)), expected)
    with open(path, "rb") as handle:
        np.testing.assert_array_equal(load_audio(handle), expected)
    np.testing.assert_array_equal(load_audio(str(path)), expected)


def test_pcm_in_a_container_only_ffmpeg_reads_is_exact(tmp_path: Path) -> None:
    # Stereo 16-bit PCM in Matroska: libsndfile cannot open it, so PyAV decodes it, and its packed
    # (interleaved) frames must be de-interleaved and averaged exactly.
    rng = np.random.default_rng(2)
    pcm = rng.integers(-20000, 20000, size=(2, 30000), dtype=np.int16)
    path = tmp_path / "stereo.mka"
    with av.open(str(path), "w", format="matroska") as out:
        stream = out.add_stream("pcm_s16le", rate=SAMPLE_RATE, layout="stereo")
        frame = av.AudioFrame.from_ndarray(pcm.T.reshape(1, -1), format="s16", layout="stereo")
        frame.sample_rate = SAMPLE_RATE
        for packet in [*stream.encode(frame), *stream.encode(None)]:
            out.mux(packet)
    with pytest.raises(RuntimeError):
        sf.info(str(path))  # the premise: this goes through the PyAV path
    expected = pcm.astype(np.float32).mean(axis=0) / 32768
    np.testing.assert_allclose(load_audio(path), expected, atol=1e-7)


def test_real_speech_from_espeak(tmp_path: Path) -> None:
    espeak = need_tool("espeak-ng")
    path = tmp_path / "speech.wav"
    subprocess.run([espeak, "-w", str(path), "Hello, this is a test of the audio loader."], check=True)
    info = sf.info(str(path))
    x = load_audio(path)
    assert info.samplerate != SAMPLE_RATE  # espeak-ng writes 22050 Hz, so this exercises resampling
    assert abs(len(x) - info.frames * SAMPLE_RATE / info.samplerate) <= 1
    assert 0.01 < float(np.sqrt(np.mean(x**2))) < 0.9


# ---------------------------------------------------------------- resampling and channels


@pytest.mark.parametrize("sr", [8000, 22050, 44100, 48000])
def test_resampling_keeps_frequency_and_duration(tmp_path: Path, sr: int) -> None:
    x = tone(1000.0, sr, 2.0)
    sf.write(tmp_path / "t.wav", x, sr, subtype="FLOAT")
    for y in (load_audio((x, sr)), load_audio(tmp_path / "t.wav")):
        assert abs(len(y) - len(x) * SAMPLE_RATE / sr) <= 1
        assert abs(dominant_frequency(y, SAMPLE_RATE) - 1000.0) < 0.2
        assert abs(tone_amplitude(y[1000:-1000], SAMPLE_RATE, 1000.0) - 0.5) < 0.005


def test_resampling_to_another_target_rate() -> None:
    y = load_audio((tone(440.0, 16000, 1.0), 16000), sampling_rate=24000)
    assert len(y) == 24000
    assert abs(dominant_frequency(y, 24000) - 440.0) < 0.5


def test_six_channels_at_48k_are_averaged(tmp_path: Path) -> None:
    freqs = [300.0, 500.0, 700.0, 900.0, 1100.0, 1300.0]
    x = np.stack([tone(f, 48000, 1.0, amplitude=0.6) for f in freqs], axis=1)  # (frames, 6)
    sf.write(tmp_path / "six.wav", x, 48000, subtype="PCM_24")
    y = load_audio(tmp_path / "six.wav")
    assert len(y) == SAMPLE_RATE
    for f in freqs:  # each channel's tone appears at 1/6 of its amplitude
        assert abs(tone_amplitude(y[800:-800], SAMPLE_RATE, f) - 0.1) < 0.002


def test_8khz_mono_file(tmp_path: Path) -> None:
    sf.write(tmp_path / "phone.wav", tone(440.0, 8000, 3.0), 8000, subtype="PCM_16")
    y = load_audio(tmp_path / "phone.wav")
    assert len(y) == 3 * SAMPLE_RATE
    assert abs(dominant_frequency(y, SAMPLE_RATE) - 440.0) < 0.2


# ---------------------------------------------------------------- (array, sr) pairs


def test_array_pairs_scale_pcm_and_find_the_channel_axis() -> None:
    x = tone(440.0, SAMPLE_RATE, 0.5)
    pcm16 = np.round(x * 32767).astype(np.int16)
    np.testing.assert_allclose(load_audio((pcm16, SAMPLE_RATE)), x, atol=1 / 32767)
    pcm32 = pcm16.astype(np.int32) << 16
    np.testing.assert_allclose(load_audio((pcm32, SAMPLE_RATE)), x, atol=1 / 32767)
    u8 = np.round(x * 127 + 128).astype(np.uint8)
    np.testing.assert_allclose(load_audio((u8, SAMPLE_RATE)), x, atol=1 / 127)
    stereo = np.stack([x, 0.5 * x])  # (2, n): channels first
    np.testing.assert_allclose(load_audio((stereo, SAMPLE_RATE)), 0.75 * x, atol=1e-7)
    np.testing.assert_array_equal(load_audio((stereo.T, SAMPLE_RATE)), load_audio((stereo, SAMPLE_RATE)))
    np.testing.assert_array_equal(load_audio((torch.from_numpy(x), SAMPLE_RATE)), x)
    np.testing.assert_allclose(load_audio((torch.from_numpy(pcm16), SAMPLE_RATE)), x, atol=1 / 32767)
    np.testing.assert_array_equal(load_audio((x.astype(np.float64), SAMPLE_RATE)), x)


@pytest.mark.parametrize(
    ("array", "problem"),
    [
        (np.zeros((100, 100), np.float32), "ambiguous"),
        (np.zeros((300, 200), np.float32), "ambiguous"),  # 200 channels is not plausible
        (np.zeros((2, 3, 100), np.float32), "1-D or 2-D"),
        (np.zeros(0, np.float32), "no audio samples"),
        (np.arange(100), "dtype int64"),
        (np.array([0.1, np.nan, 0.2], np.float32), "non-finite"),
        (np.array([0.1, 0.2, np.inf], np.float32), "non-finite"),
    ],
)
def test_bad_arrays(array: np.ndarray, problem: str) -> None:
    with pytest.raises(AudioError, match=problem) as err:
        load_audio((array, SAMPLE_RATE))
    assert "<array>" in str(err.value)


# ---------------------------------------------------------------- bad input a new user would try


def assert_audio_error(source: object, *keywords: str, name: str, **kwargs: object) -> AudioError:
    with pytest.raises(AudioError) as err:
        load_audio(source, **kwargs)
    message = str(err.value)
    assert "\n" not in message and len(message) < 300, message
    assert name in message, message
    for keyword in keywords:
        assert keyword in message, message
    return err.value


def test_missing_file_and_directory(tmp_path: Path) -> None:
    assert_audio_error(tmp_path / "nope.wav", "file not found", name="nope.wav")
    assert_audio_error(tmp_path, "not a regular file", name=str(tmp_path))


def test_empty_inputs(tmp_path: Path) -> None:
    (tmp_path / "empty.wav").touch()
    assert_audio_error(tmp_path / "empty.wav", "empty", name="empty.wav")
    assert_audio_error(b"", "empty", name="<bytes>")
    assert_audio_error(io.BytesIO(b""), "empty", name="<file object>")


def test_not_audio(tmp_path: Path) -> None:
    noise = np.random.default_rng(3).bytes(50_000)
    assert_audio_error(noise, "not a recognised audio file", name="<bytes>")
    (tmp_path / "notes.txt").write_text("this is a text file, not audio\n" * 100)
    assert_audio_error(tmp_path / "notes.txt", "not a recognised audio file", name="notes.txt")
    (tmp_path / "fake.mp3").write_bytes(b"ID3" + noise[:3000])
    assert_audio_error(tmp_path / "fake.mp3", name="fake.mp3")


def test_wav_with_header_and_no_samples(tmp_path: Path) -> None:
    sf.write(tmp_path / "zero.wav", np.zeros(0, np.float32), SAMPLE_RATE)
    assert_audio_error(tmp_path / "zero.wav", "no audio samples", name="zero.wav")


@pytest.mark.parametrize("cut", [12, 30, 44, 1000, 20001])
def test_truncated_wav_loads_what_is_there_or_raises(tmp_path: Path, cut: int) -> None:
    x = tone(440.0, SAMPLE_RATE, 1.0)
    sf.write(tmp_path / "full.wav", x, SAMPLE_RATE, subtype="PCM_16")
    (tmp_path / "cut.wav").write_bytes((tmp_path / "full.wav").read_bytes()[:cut])
    try:
        y = load_audio(tmp_path / "cut.wav")
    except AudioError as err:
        assert "cut.wav" in str(err) and "\n" not in str(err)
    else:
        assert 0 < len(y) < len(x)
        np.testing.assert_allclose(y, x[: len(y)], atol=1 / 32767)


@pytest.mark.parametrize("kind", ["wav", "flac", "ogg", "opus", "mp3", "m4a", "webm"])
def test_damaged_files_load_or_raise_audio_error(tmp_path: Path, kind: str) -> None:
    path = tmp_path / f"tone.{kind}"
    write_fixture(path, tone(TONE_HZ, 48000, 0.5), 48000)
    data = path.read_bytes()
    rng = np.random.default_rng(4)
    for trial in range(12):
        damaged = bytearray(data)
        if trial % 2 == 0:
            damaged = damaged[: int(rng.integers(1, len(data)))]
        else:
            at = int(rng.integers(0, len(data) - 64))
            damaged[at : at + 64] = rng.bytes(64)
        try:
            y = load_audio(bytes(damaged))
        except AudioError as err:
            assert str(err).startswith("<bytes>: ") and "\n" not in str(err)
        else:
            assert y.dtype == np.float32 and y.ndim == 1 and len(y) > 0 and np.isfinite(y).all()


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_samples_in_a_float_wav(tmp_path: Path, bad: float) -> None:
    x = tone(440.0, SAMPLE_RATE, 1.0)
    x[12000] = bad
    sf.write(tmp_path / "bad.wav", x, SAMPLE_RATE, subtype="FLOAT")
    err = assert_audio_error(tmp_path / "bad.wav", "non-finite", name="bad.wav")
    assert "0.750 s" in str(err)  # where the first bad sample is


@pytest.mark.parametrize("rate", [0, -16000, 16000.5, 16000.0, "16000", True, None])
def test_invalid_sampling_rate_argument(tmp_path: Path, rate: object) -> None:
    sf.write(tmp_path / "t.wav", tone(440.0, SAMPLE_RATE, 0.1), SAMPLE_RATE)
    assert_audio_error(tmp_path / "t.wav", "invalid sampling_rate", name="t.wav", sampling_rate=rate)
    assert_audio_error((tone(440.0, SAMPLE_RATE, 0.1), rate), "invalid sampling rate", name="<array>")


@pytest.mark.parametrize("limit", [0, -1.0, float("nan"), "20m"])
def test_invalid_max_seconds_argument(limit: object) -> None:
    assert_audio_error(
        (tone(440.0, SAMPLE_RATE, 0.1), SAMPLE_RATE), "invalid max_seconds", name="<array>", max_seconds=limit
    )


def test_unsupported_sources() -> None:
    assert_audio_error(np.zeros(100, np.float32), "(array, sampling_rate)", name="<array>")
    assert_audio_error(12345, "unsupported source type int", name="<file object>")
    assert_audio_error(io.StringIO("RIFF"), "binary mode", name="<file object>")


def test_stereo_wav_with_one_bad_channel(tmp_path: Path) -> None:
    x = np.stack([tone(440.0, SAMPLE_RATE, 0.5), tone(440.0, SAMPLE_RATE, 0.5)], axis=1)
    x[100, 1] = np.nan
    sf.write(tmp_path / "st.wav", x, SAMPLE_RATE, subtype="FLOAT")
    assert_audio_error(tmp_path / "st.wav", "non-finite", name="st.wav")


# ---------------------------------------------------------------- length limit


def test_limit_is_inclusive() -> None:
    x = tone(440.0, SAMPLE_RATE, 2.0)
    assert len(load_audio((x, SAMPLE_RATE), max_seconds=2.0)) == len(x)
    assert_audio_error((np.append(x, 0.0), SAMPLE_RATE), "max_seconds=2", name="<array>", max_seconds=2.0)
    assert len(load_audio((np.append(x, 0.0), SAMPLE_RATE), max_seconds=None)) == len(x) + 1


def looped_file(tmp_path: Path, suffix: str, codec_args: list[str], seconds: int, sr: int) -> Path:
    """A long file of silence made cheaply: encode one minute, then repeat its packets without re-encoding."""
    ffmpeg = need_tool("ffmpeg")
    one = tmp_path / f"minute{suffix}"
    long = tmp_path / f"long{suffix}"
    quiet = ["-hide_banner", "-loglevel", "error", "-y"]
    subprocess.run(
        [ffmpeg, *quiet, "-f", "lavfi", "-i", f"anullsrc=r={sr}:cl=mono", "-t", "60", *codec_args, str(one)],
        check=True,
    )
    subprocess.run(
        [ffmpeg, *quiet, "-stream_loop", str(seconds // 60 - 1), "-i", str(one), "-c", "copy", str(long)],
        check=True,
    )
    return long


def test_two_hour_opus_fails_fast_from_the_header(tmp_path: Path) -> None:
    path = looped_file(tmp_path, ".opus", ["-c:a", "libopus", "-b:a", "6k"], 7200, 48000)
    assert path.stat().st_size < 10_000_000
    tracemalloc.start()
    start = time.perf_counter()
    try:
        err = assert_audio_error(path, "7200", "max_seconds=1200", name="long.opus", max_seconds=1200.0)
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    assert time.perf_counter() - start < 1.0
    assert peak < 20_000_000, f"{peak / 1e6:.0f} MB"  # the full 2 h at 48 kHz would be 1.4 GB
    assert "7200" in str(err)


def test_two_hour_m4a_stops_decoding_at_the_limit(tmp_path: Path) -> None:
    # libsndfile cannot read m4a, so PyAV decodes it and the limit is enforced by counting samples.
    path = looped_file(tmp_path, ".m4a", ["-c:a", "aac", "-b:a", "16k"], 7200, 16000)
    start = time.perf_counter()
    assert_audio_error(path, "decoding stopped", "max_seconds=1200", name="long.m4a", max_seconds=1200.0)
    assert time.perf_counter() - start < 15.0  # decoding 2 h would take 6x longer than stopping at 20 min


def test_counted_limit_keeps_memory_bounded(tmp_path: Path) -> None:
    path = looped_file(tmp_path, ".webm", ["-c:a", "libopus", "-b:a", "6k"], 600, 48000)
    tracemalloc.start()
    try:
        assert_audio_error(path, "decoding stopped", name="long.webm", max_seconds=30.0)
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    # 30 s at 16 kHz float32 is 1.9 MB; the whole 10 minutes would be 38 MB at 16 kHz (115 MB at 48 kHz).
    assert peak < 10_000_000, f"{peak / 1e6:.1f} MB"
    assert abs(len(load_audio(path, max_seconds=None)) / SAMPLE_RATE - 600) < 1.0


# ---------------------------------------------------------------- duration


def test_audio_duration(tmp_path: Path) -> None:
    for kind in ("wav", "webm", "m4a"):
        write_fixture(tmp_path / f"t.{kind}", tone(440.0, 48000, 2.0), 48000)
        assert abs(audio_duration(tmp_path / f"t.{kind}") - 2.0) < 0.05
    assert audio_duration((np.zeros((2, 8000)), 8000)) == 1.0
    with pytest.raises(AudioError, match="not a recognised"):
        audio_duration(b"definitely not audio" * 100)


def test_joined_mp3_is_decoded_to_the_end(tmp_path: Path) -> None:
    """Two mp3 files joined byte-wise: libsndfile would stop after the first; every frame must be decoded."""
    ffmpeg = need_tool("ffmpeg")
    parts = []
    for i, freq in enumerate((440, 880)):
        path = tmp_path / f"p{i}.mp3"
        subprocess.run(
            [ffmpeg, "-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi", "-i", f"sine=f={freq}:r=16000",
             "-t", "3", "-c:a", "libmp3lame", "-b:a", "32k", str(path)],
            check=True,
        )
        parts.append(path.read_bytes())
    joined = tmp_path / "joined.mp3"
    joined.write_bytes(parts[0] + parts[1])
    x = load_audio(joined)
    assert abs(len(x) / SAMPLE_RATE - 6.0) < 0.2
    assert abs(dominant_frequency(x[-16000:], SAMPLE_RATE) - 880) < 5


@pytest.mark.parametrize("rate", [1, 8, 999])
def test_sample_rates_below_the_floor_are_refused_before_decoding(tmp_path: Path, rate: int) -> None:
    """A 444-byte WAV at 1 Hz declares 200 s: resampling it to 16 kHz cost ~50 s of CPU before the floor."""
    sf.write(tmp_path / "slow.wav", tone(0.1, rate, 200 / rate), rate, subtype="PCM_16")  # 200 samples
    assert (tmp_path / "slow.wav").stat().st_size < 1000
    start = time.monotonic()
    err = assert_audio_error(tmp_path / "slow.wav", f"sample rate {rate} Hz", name="slow.wav")
    assert "1000 Hz" in str(err)
    assert_audio_error((tmp_path / "slow.wav").read_bytes(), f"sample rate {rate} Hz", name="<bytes>")
    assert_audio_error((tone(0.1, rate, 2.0), rate), f"sample rate {rate} Hz", name="<array>")
    assert time.monotonic() - start < 1.0


def test_the_sample_rate_floor_itself_loads() -> None:
    assert len(load_audio((tone(100.0, 1000, 0.5), 1000))) == 8000
