"""Non-speech sounds from numpy/scipy: sound events, acoustic scenes and instrument notes, all at 16 kHz.

Every generator takes a numpy Generator and returns float32 samples (peak around 1, before the final level
is set), so a clip is a pure function of its seed. Labels use the snake_case keys below; the words a model
answers with are in EVENT_NAMES / SCENE_NAMES / INSTRUMENTS.
"""

import numpy as np
import scipy.signal

from auralm.audio.geometry import SAMPLE_RATE

EVENT_NAMES = {
    "beep": "beep",
    "rising_chirp": "rising chirp",
    "falling_chirp": "falling chirp",
    "white_noise": "white noise",
    "pink_noise": "pink noise",
    "brown_noise": "brown noise",
    "click_train": "click train",
    "siren": "siren",
    "dtmf": "telephone keypad tone",
    "buzz": "buzz",
    "knock": "knocking",
    "bell": "bell",
    "whistle": "whistle",
    "silence": "silence",
}
EVENT_CLASSES = tuple(EVENT_NAMES)
# DTMF: the row and column frequency of each key.
DTMF_KEYS = {
    "1": (697, 1209), "2": (697, 1336), "3": (697, 1477), "4": (770, 1209), "5": (770, 1336),
    "6": (770, 1477), "7": (852, 1209), "8": (852, 1336), "9": (852, 1477), "*": (941, 1209),
    "0": (941, 1336), "#": (941, 1477),
}  # fmt: skip


def seconds(n: float) -> int:
    """Number of samples in `n` seconds."""
    return round(n * SAMPLE_RATE)


def _t(duration: float) -> np.ndarray:
    return np.arange(seconds(duration)) / SAMPLE_RATE


def fade(audio: np.ndarray, ramp: float = 0.005) -> np.ndarray:
    """Raised-cosine fade in and out over `ramp` seconds, so tones start and stop without clicks."""
    n = min(seconds(ramp), audio.size // 2)
    if n == 0:
        return audio
    ramp_up = 0.5 - 0.5 * np.cos(np.pi * np.arange(n) / n)
    out = audio.copy()
    out[:n] *= ramp_up
    out[-n:] *= ramp_up[::-1]
    return out


def noise(n: int, color: str, rng: np.random.Generator) -> np.ndarray:
    """Unit-RMS noise of `n` samples whose power spectrum falls as 1/f^k: white k=0, pink k=1, brown k=2."""
    exponent = {"white": 0.0, "pink": 1.0, "brown": 2.0}.get(color)
    if exponent is None:
        raise ValueError(f"unknown noise color {color!r}; expected white, pink or brown")
    if n == 0:
        return np.zeros(0, np.float32)
    white = rng.standard_normal(n)
    if exponent:
        spectrum = np.fft.rfft(white)
        f = np.fft.rfftfreq(n, 1 / SAMPLE_RATE)
        f[0] = f[1] if n > 1 else 1.0
        spectrum *= (f / 20.0) ** (-exponent / 2)  # amplitude ~ f^(-k/2) gives power ~ f^-k
        spectrum[0] = 0.0
        white = np.fft.irfft(spectrum, n)
    return (white / (np.sqrt(np.mean(white**2)) + 1e-12)).astype(np.float32)


def tone(freq: float, duration: float, amplitude: float = 1.0) -> np.ndarray:
    """A faded sine tone."""
    return fade(amplitude * np.sin(2 * np.pi * freq * _t(duration))).astype(np.float32)


def beep(
    rng: np.random.Generator, freq: float | None = None, duration: float | None = None
) -> tuple[np.ndarray, dict]:
    """A beep: a sine of 0.1-0.3 s at 400-2000 Hz (random unless given)."""
    freq = float(freq if freq is not None else round(rng.uniform(400, 2000)))
    duration = float(duration if duration is not None else round(rng.uniform(0.1, 0.3), 3))
    return tone(freq, duration, 0.8), {"freq_hz": freq, "duration": duration}


def beep_sequence(
    rng: np.random.Generator, count: int, freq: float | None = None
) -> tuple[np.ndarray, list[dict]]:
    """`count` beeps 0.1-0.5 s apart; one frequency for all unless `freq` is None and the coin says vary.
    Returns the audio and one {"start", "end", "freq_hz"} per beep (seconds from the sequence start)."""
    same = freq is not None or rng.random() < 0.6
    base = float(freq if freq is not None else round(rng.uniform(400, 2000)))
    pieces, marks, cursor = [], [], 0
    for i in range(count):
        b, info = beep(rng, base if same else None)
        marks.append(
            {
                "start": cursor / SAMPLE_RATE,
                "end": (cursor + b.size) / SAMPLE_RATE,
                "freq_hz": info["freq_hz"],
            }
        )
        pieces.append(b)
        cursor += b.size
        if i < count - 1:
            gap = np.zeros(seconds(rng.uniform(0.1, 0.5)), np.float32)
            pieces.append(gap)
            cursor += gap.size
    return np.concatenate(pieces), marks


def chirp(rng: np.random.Generator, rising: bool) -> np.ndarray:
    """A 0.3-1.0 s sweep between 300-800 Hz and 1.5-4 kHz (exponential, so it sounds even)."""
    low, high = rng.uniform(300, 800), rng.uniform(1500, 4000)
    f0, f1 = (low, high) if rising else (high, low)
    duration = rng.uniform(0.3, 1.0)
    t = _t(duration)
    return fade(0.8 * scipy.signal.chirp(t, f0, duration, f1, method="logarithmic")).astype(np.float32)


def click_train(rng: np.random.Generator) -> np.ndarray:
    """Clicks (1 ms decaying noise bursts) at 4-20 per second for 0.5-2 s."""
    duration, rate = rng.uniform(0.5, 2.0), rng.uniform(4, 20)
    out = np.zeros(seconds(duration), np.float32)
    click = (rng.standard_normal(seconds(0.002)) * np.exp(-np.arange(seconds(0.002)) / 8)).astype(np.float32)
    for start in np.arange(0, duration - 0.002, 1 / rate):
        i = seconds(start)
        out[i : i + click.size] += click[: out.size - i]
    return out / (np.abs(out).max() + 1e-12)


def siren(rng: np.random.Generator) -> np.ndarray:
    """A wailing siren: a tone swept up and down 600-1400 Hz at 0.3-2 Hz for 1-3 s."""
    duration = rng.uniform(1.0, 3.0)
    t = _t(duration)
    low, high, rate = rng.uniform(500, 800), rng.uniform(1100, 1500), rng.uniform(0.3, 2.0)
    freq = low + (high - low) * 0.5 * (1 - np.cos(2 * np.pi * rate * t))
    phase = 2 * np.pi * np.cumsum(freq) / SAMPLE_RATE
    return fade(0.7 * np.sin(phase) + 0.2 * np.sin(3 * phase)).astype(np.float32)


def dtmf(rng: np.random.Generator) -> tuple[np.ndarray, str]:
    """One to four telephone keypad tones (two sines each, 0.1-0.3 s, 0.08-0.2 s apart) and the keys pressed."""
    keys = "".join(rng.choice(list(DTMF_KEYS), size=int(rng.integers(1, 5))))
    pieces = []
    for key in keys:
        low, high = DTMF_KEYS[key]
        duration = rng.uniform(0.1, 0.3)
        pieces += [
            0.5 * (tone(low, duration) + tone(high, duration)),
            np.zeros(seconds(rng.uniform(0.08, 0.2)), np.float32),
        ]
    return np.concatenate(pieces[:-1]), keys


def buzz(rng: np.random.Generator) -> np.ndarray:
    """A buzz: a band-limited sawtooth at 50-200 Hz for 0.3-1.5 s."""
    f0, duration = rng.uniform(50, 200), rng.uniform(0.3, 1.5)
    t = _t(duration)
    harmonics = np.arange(1, int(4000 / f0) + 1)
    wave = np.sum(np.sin(2 * np.pi * f0 * np.outer(harmonics, t)) / harmonics[:, None], axis=0)
    return fade(wave / np.abs(wave).max()).astype(np.float32)


def knock(rng: np.random.Generator) -> np.ndarray:
    """Two to four knocks on wood: damped 150-400 Hz resonances struck by a short noise burst."""
    out = []
    for _ in range(int(rng.integers(2, 5))):
        t = _t(0.15)
        f = rng.uniform(150, 400)
        hit = np.sin(2 * np.pi * f * t) * np.exp(-t / 0.02) + 0.3 * rng.standard_normal(t.size) * np.exp(
            -t / 0.004
        )
        out += [hit, np.zeros(seconds(rng.uniform(0.1, 0.3)))]
    audio = np.concatenate(out[:-1])
    return (audio / np.abs(audio).max()).astype(np.float32)


def bell(rng: np.random.Generator) -> np.ndarray:
    """A struck bell: inharmonic partials (ratios 0.5, 1, 1.2, 1.5, 2, 2.74, 3) with long, partial-wise decay."""
    f0, duration = rng.uniform(300, 1200), rng.uniform(1.0, 2.5)
    t = _t(duration)
    ratios = np.array([0.5, 1.0, 1.2, 1.5, 2.0, 2.74, 3.0])
    decays = duration / (1 + ratios)
    wave = np.sum(
        np.sin(2 * np.pi * f0 * np.outer(ratios, t)) * np.exp(-t / decays[:, None]) / (1 + ratios[:, None]), 0
    )
    return fade(wave / np.abs(wave).max(), 0.002).astype(np.float32)


def whistle(rng: np.random.Generator) -> np.ndarray:
    """A whistle: a 1.5-3 kHz sine with 5-7 Hz vibrato and a little breath noise, 0.4-1.5 s."""
    f0, duration = rng.uniform(1500, 3000), rng.uniform(0.4, 1.5)
    t = _t(duration)
    freq = f0 * (1 + 0.02 * np.sin(2 * np.pi * rng.uniform(5, 7) * t))
    wave = np.sin(2 * np.pi * np.cumsum(freq) / SAMPLE_RATE) + 0.05 * rng.standard_normal(t.size)
    return fade(wave / np.abs(wave).max(), 0.03).astype(np.float32)


def event(label: str, rng: np.random.Generator) -> tuple[np.ndarray, dict]:
    """One instance of sound-event class `label` and its details (e.g. the beep count or the DTMF keys)."""
    if label == "beep":
        count = int(rng.integers(1, 5))
        audio, marks = beep_sequence(rng, count)
        return audio, {"count": count, "beeps": marks}
    if label in ("rising_chirp", "falling_chirp"):
        return chirp(rng, rising=label == "rising_chirp"), {}
    if label in ("white_noise", "pink_noise", "brown_noise"):
        n = seconds(rng.uniform(0.5, 2.0))
        return fade(0.3 * noise(n, label.split("_")[0], rng), 0.02), {}
    if label == "dtmf":
        audio, keys = dtmf(rng)
        return audio, {"keys": keys}
    if label == "silence":
        return np.zeros(seconds(rng.uniform(0.5, 2.0)), np.float32), {}
    makers = {
        "click_train": click_train,
        "siren": siren,
        "buzz": buzz,
        "knock": knock,
        "bell": bell,
        "whistle": whistle,
    }
    if label not in makers:
        raise ValueError(f"unknown sound event {label!r}; expected one of {EVENT_CLASSES}")
    return makers[label](rng), {}


# ---------------------------------------------------------------------------------------------------------
# Acoustic scenes: a characteristic background bed plus scattered foreground events.

SCENE_NAMES = {
    "street": "busy street",
    "office": "office",
    "park": "park",
    "rain": "rainstorm",
    "kitchen": "kitchen",
    "train_station": "train station",
    "beach": "beach",
}
SCENE_CLASSES = tuple(SCENE_NAMES)


def _lowpass(x: np.ndarray, cutoff: float) -> np.ndarray:
    sos = scipy.signal.butter(4, cutoff, "lowpass", fs=SAMPLE_RATE, output="sos")
    return scipy.signal.sosfilt(sos, x)


def _bandpass(x: np.ndarray, low: float, high: float) -> np.ndarray:
    sos = scipy.signal.butter(2, [low, high], "bandpass", fs=SAMPLE_RATE, output="sos")
    return scipy.signal.sosfilt(sos, x)


def _place(bed: np.ndarray, sound: np.ndarray, rng: np.random.Generator, level: float) -> None:
    """Add `sound` at a random position of `bed` (in place), scaled to peak `level`."""
    if sound.size >= bed.size:
        sound = sound[: bed.size - 1]
    start = int(rng.integers(0, bed.size - sound.size))
    bed[start : start + sound.size] += level * sound / (np.abs(sound).max() + 1e-12)


def _bird(rng: np.random.Generator) -> np.ndarray:
    pieces = []
    for _ in range(int(rng.integers(2, 6))):
        t = _t(rng.uniform(0.04, 0.12))
        f = rng.uniform(2500, 5000) + rng.uniform(-1500, 1500) * t / t[-1]
        pieces += [
            fade(np.sin(2 * np.pi * np.cumsum(f) / SAMPLE_RATE), 0.01),
            np.zeros(seconds(rng.uniform(0.03, 0.1))),
        ]
    return np.concatenate(pieces)


def _swell(n: int, rng: np.random.Generator, period: tuple[float, float]) -> np.ndarray:
    """A slow random amplitude envelope in [0.2, 1] with swells every `period` seconds."""
    t = np.arange(n) / SAMPLE_RATE
    return 0.6 + 0.4 * np.sin(2 * np.pi * t / rng.uniform(*period) + rng.uniform(0, 2 * np.pi))


def scene(label: str, duration: float, rng: np.random.Generator) -> np.ndarray:
    """`duration` seconds of acoustic scene `label`."""
    n = seconds(duration)
    t = np.arange(n) / SAMPLE_RATE
    if label == "street":
        bed = _lowpass(noise(n, "brown", rng), 400) * _swell(n, rng, (2, 5))
        for _ in range(int(rng.integers(1, 4))):  # passing cars: band noise with a rise-and-fall
            car = _bandpass(noise(seconds(2.0), "pink", rng), 80, 1200) * np.hanning(seconds(2.0))
            _place(bed, car, rng, 1.5)
        if rng.random() < 0.7:  # a horn: two detuned square waves
            horn = np.sign(np.sin(2 * np.pi * 400 * _t(0.4))) + np.sign(np.sin(2 * np.pi * 500 * _t(0.4)))
            _place(bed, fade(_lowpass(horn, 3000), 0.02), rng, 0.6)
    elif label == "office":
        bed = 0.3 * _lowpass(noise(n, "pink", rng), 2000)  # ventilation
        for _ in range(int(rng.integers(2, 5))):  # bursts of typing
            burst = np.zeros(seconds(rng.uniform(0.5, 1.5)))
            for start in np.cumsum(rng.uniform(0.06, 0.2, size=20)):
                i = seconds(start)
                if i + 80 < burst.size:
                    burst[i : i + 80] += rng.standard_normal(80) * np.exp(-np.arange(80) / 10)
            _place(bed, _bandpass(burst, 1000, 6000), rng, 0.8)
        if rng.random() < 0.6:  # a phone ringing: 440+480 Hz gated at 20 Hz
            tt = _t(1.0)
            ring = (np.sin(2 * np.pi * 440 * tt) + np.sin(2 * np.pi * 480 * tt)) * (
                np.sin(2 * np.pi * 20 * tt) > 0
            )
            _place(bed, fade(ring), rng, 0.6)
    elif label == "park":
        bed = 0.4 * _lowpass(noise(n, "pink", rng), 600) * _swell(n, rng, (3, 8))  # wind
        for _ in range(int(rng.integers(3, 8))):
            _place(bed, _bird(rng), rng, rng.uniform(0.3, 0.8))
    elif label == "rain":
        bed = 0.5 * _bandpass(noise(n, "white", rng), 500, 7000)
        drops = (rng.random(n) < 0.004) * rng.standard_normal(n)
        bed += _bandpass(drops, 1000, 5000) * 3
        if rng.random() < 0.5:  # distant thunder
            rumble = _lowpass(noise(seconds(2.5), "brown", rng), 150) * np.hanning(seconds(2.5))
            _place(bed, rumble, rng, 1.2)
    elif label == "kitchen":
        hum = sum(np.sin(2 * np.pi * 60 * k * t) / k for k in (1, 2, 3))  # fridge hum
        sizzle = _bandpass(noise(n, "white", rng), 3000, 7500) * (rng.random(n) < 0.3)
        bed = 0.15 * hum + 0.3 * sizzle
        if rng.random() < 0.7:  # a microwave done: three beeps
            done, _ = beep_sequence(rng, 3, freq=1000.0)
            _place(bed, done, rng, 0.6)
        for _ in range(int(rng.integers(1, 3))):  # clattering pots
            _place(bed, bell(rng)[: seconds(0.4)] * np.exp(-_t(0.4) / 0.08), rng, 0.5)
    elif label == "train_station":
        bed = 0.5 * _lowpass(noise(n, "brown", rng), 300) + 0.1 * _bandpass(noise(n, "pink", rng), 200, 2000)
        if rng.random() < 0.8:  # announcement chime: three falling bell notes
            chime = np.concatenate([tone(f, 0.35) * np.exp(-_t(0.35) / 0.2) for f in (784, 659, 523)])
            _place(bed, chime, rng, 0.7)
        if rng.random() < 0.6:  # brake squeal
            _place(bed, fade(np.sin(2 * np.pi * rng.uniform(3000, 4500) * _t(1.2)), 0.2), rng, 0.3)
    elif label == "beach":
        waves = _lowpass(noise(n, "pink", rng), 1500) * (
            0.3 + 0.7 * np.sin(np.pi * t / rng.uniform(4, 7)) ** 4
        )
        bed = 0.8 * waves
        for _ in range(int(rng.integers(0, 3))):  # gulls: falling nasal cries
            tt = _t(0.35)
            f = np.linspace(rng.uniform(1400, 1800), rng.uniform(800, 1100), tt.size)
            cry = np.sign(np.sin(2 * np.pi * np.cumsum(f) / SAMPLE_RATE)) * np.hanning(tt.size)
            _place(bed, _lowpass(cry, 4000), rng, 0.3)
    else:
        raise ValueError(f"unknown scene {label!r}; expected one of {SCENE_CLASSES}")
    return (bed / (np.abs(bed).max() + 1e-12)).astype(np.float32)


# ---------------------------------------------------------------------------------------------------------
# Music notes.

INSTRUMENTS = ("organ", "flute", "clarinet", "violin", "guitar", "piano", "mallet", "brass")
# NSynth-style sonic qualities that each timbre has by construction.
INSTRUMENT_QUALITIES = {
    "organ": (),
    "flute": (),
    "clarinet": (),
    "violin": (),
    "guitar": ("percussive", "fast_decay"),
    "piano": ("percussive",),
    "mallet": ("percussive", "fast_decay"),
    "brass": (),
}
VELOCITIES = {"soft": 40, "medium": 80, "loud": 120}  # loudness word -> MIDI velocity
NOTE_NAMES = ("C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B")
MIDI_RANGE = (36, 96)


def note_name(midi: int) -> str:
    """Scientific pitch name: 60 -> "C4", 61 -> "C#4"."""
    return f"{NOTE_NAMES[midi % 12]}{midi // 12 - 1}"


def midi_to_hz(midi: float) -> float:
    """Equal temperament with A4 (MIDI 69) = 440 Hz."""
    return 440.0 * 2 ** ((midi - 69) / 12)


def _additive(f0: float, t: np.ndarray, amplitudes: dict[int, float]) -> np.ndarray:
    wave = np.zeros_like(t)
    for k, a in amplitudes.items():
        if k * f0 < SAMPLE_RATE / 2 - 500:  # stay below Nyquist: no aliased partials
            wave += a * np.sin(2 * np.pi * k * f0 * t)
    return wave


def _adsr(n: int, attack: float, decay: float, sustain: float, release: float) -> np.ndarray:
    a, d, r = seconds(attack), seconds(decay), seconds(release)
    s = max(n - a - d - r, 0)
    env = np.concatenate(
        [np.linspace(0, 1, a), np.linspace(1, sustain, d), np.full(s, sustain), np.linspace(sustain, 0, r)]
    )
    return np.pad(env, (0, max(n - env.size, 0)))[:n]


def note(instrument: str, midi: int, velocity: str, duration: float, rng: np.random.Generator) -> np.ndarray:
    """One note of `instrument` at MIDI pitch `midi`, loudness `velocity` (soft/medium/loud), `duration` s.

    Loudness sets the peak level (soft 0.25, medium 0.5, loud 1.0) and, as on real instruments, the
    brightness: louder notes have stronger upper partials. Note clips are stored without renormalising, so
    both cues survive.
    """
    if instrument not in INSTRUMENTS:
        raise ValueError(f"unknown instrument {instrument!r}; expected one of {INSTRUMENTS}")
    if velocity not in VELOCITIES:
        raise ValueError(f"unknown velocity {velocity!r}; expected one of {tuple(VELOCITIES)}")
    if not MIDI_RANGE[0] <= midi <= MIDI_RANGE[1]:
        raise ValueError(f"MIDI pitch {midi} outside {MIDI_RANGE}")
    f0 = midi_to_hz(midi) * (1 + rng.uniform(-0.003, 0.003))  # a few cents of tuning error
    bright = {"soft": 0.4, "medium": 0.7, "loud": 1.0}[velocity]
    n = seconds(duration)
    t = np.arange(n) / SAMPLE_RATE
    if instrument == "organ":
        wave = _additive(
            f0,
            t,
            {1: 1, 2: 0.7 * bright, 3: 0.5 * bright, 4: 0.4 * bright, 6: 0.2 * bright, 8: 0.15 * bright},
        )
        env = _adsr(n, 0.02, 0.05, 0.9, 0.05)
    elif instrument == "flute":
        vibrato = 1 + 0.004 * np.sin(2 * np.pi * 5 * t)
        phase = 2 * np.pi * np.cumsum(f0 * vibrato) / SAMPLE_RATE
        wave = np.sin(phase) + 0.15 * bright * np.sin(2 * phase) + 0.03 * rng.standard_normal(n)
        env = _adsr(n, 0.08, 0.1, 0.8, 0.1)
    elif instrument == "clarinet":
        wave = _additive(f0, t, {k: (bright ** (k // 4)) / k for k in range(1, 16, 2)})  # odd harmonics
        env = _adsr(n, 0.04, 0.05, 0.85, 0.08)
    elif instrument == "violin":
        vibrato = 1 + 0.006 * np.sin(2 * np.pi * 6 * t) * np.clip(t / 0.3, 0, 1)
        phase = 2 * np.pi * np.cumsum(f0 * vibrato) / SAMPLE_RATE
        kmax = max(1, int((SAMPLE_RATE / 2 - 500) / f0))
        wave = sum((bright ** (k / 6)) * np.sin(k * phase) / k for k in range(1, min(kmax, 30) + 1))
        env = _adsr(n, 0.12, 0.1, 0.8, 0.15)
    elif instrument == "guitar":
        wave = _karplus_strong(f0, n, 0.996 if bright > 0.5 else 0.99, rng)
        env = _adsr(n, 0.002, 0.0, 1.0, 0.05)
    elif instrument == "piano":
        partials = {k: (bright ** (k / 3)) / k for k in range(1, 12)}
        inharmonic = np.zeros(n)
        for k, a in partials.items():
            fk = k * f0 * np.sqrt(1 + 0.0004 * k * k)  # stiff-string inharmonicity
            if fk < SAMPLE_RATE / 2 - 500:
                inharmonic += a * np.sin(2 * np.pi * fk * t) * np.exp(-t * (0.8 + 0.4 * k))
        wave = inharmonic
        env = _adsr(n, 0.003, 0.0, 1.0, 0.08)
    elif instrument == "mallet":
        wave = _additive(f0, t, {1: 1.0}) + 0.5 * bright * np.sin(2 * np.pi * 3.93 * f0 * t) * np.exp(
            -t / 0.05
        ) * (3.93 * f0 < 7500)
        env = np.exp(-t / 0.35) * _adsr(n, 0.001, 0.0, 1.0, 0.05)
    else:  # brass: sawtooth whose brightness rises with the attack
        kmax = max(1, min(25, int((SAMPLE_RATE / 2 - 500) / f0)))
        rise = np.clip(t / 0.08, 0, 1)
        wave = sum(
            (bright * rise) ** (k / 4) * np.sin(2 * np.pi * k * f0 * t) / k for k in range(1, kmax + 1)
        )
        env = _adsr(n, 0.05, 0.1, 0.85, 0.1)
    out = wave * env
    level = {"soft": 0.25, "medium": 0.5, "loud": 1.0}[velocity]
    return (level * out / (np.abs(out).max() + 1e-12)).astype(np.float32)


def _karplus_strong(f0: float, n: int, loss: float, rng: np.random.Generator) -> np.ndarray:
    """Plucked string: a noise burst circulating in a delay line with an averaging low-pass (delay 1/2 sample)
    and a first-order all-pass for the fractional rest of the period, so the pitch is exact. As one IIR filter:
    (1 + c z^-1) Y = (1 + c z^-1) X + loss/2 z^-N (1 + z^-1)(c + z^-1) Y, run by scipy."""
    total = SAMPLE_RATE / f0 - 0.5  # delay line + all-pass, in samples
    delay = max(1, int(np.floor(total - 0.1)))
    frac = total - delay  # in [0.1, 1.1): where the all-pass delay is accurate and stable
    c = (1 - frac) / (1 + frac)
    excitation = np.zeros(n)
    # The string's shape when plucked at a random point: a triangle (harmonics fall as 1/k^2, so the
    # fundamental leads), roughened by a little noise.
    size = min(delay + 1, n)
    where = rng.uniform(0.15, 0.35)
    x = np.arange(size) / size
    burst = np.where(x < where, x / where, (1 - x) / (1 - where)) + 0.1 * rng.uniform(-1, 1, size)
    excitation[:size] = burst - burst.mean()
    numerator = np.array([1.0, c])
    denominator = np.zeros(delay + 3)
    denominator[0], denominator[1] = 1.0, c
    denominator[delay : delay + 3] -= loss / 2 * np.array([c, 1 + c, 1.0])
    return scipy.signal.lfilter(numerator, denominator, excitation)
