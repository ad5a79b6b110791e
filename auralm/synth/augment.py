"""Acoustic augmentation: background noise at a chosen SNR, a synthetic room, speed change, a telephone channel,
and level.

Every function takes float32 mono 16 kHz samples and a numpy Generator, and is deterministic given both.
`augment()` picks a random chain and returns a description that goes into the manifest record.
"""

import numpy as np
import scipy.signal

from auralm.synth import signals
from auralm.synth.speech import SAMPLE_RATE

SNRS_DB = (5.0, 10.0, 15.0, 20.0, 30.0)
NOISE_COLORS = ("white", "pink", "brown")


def add_noise(audio: np.ndarray, snr_db: float, color: str, rng: np.random.Generator) -> np.ndarray:
    """`audio` plus `color` noise scaled so that signal power / noise power = `snr_db` (power over the
    non-silent samples, so the pauses between words do not lower the measured signal level)."""
    noise = signals.noise(audio.size, color, rng)
    active = audio[np.abs(audio) > 0.02 * np.abs(audio).max()] if audio.any() else audio
    signal_power = float(np.mean(active.astype(np.float64) ** 2)) if active.size else 0.0
    noise_power = float(np.mean(noise.astype(np.float64) ** 2))
    if signal_power == 0.0 or noise_power == 0.0:
        return audio.copy()
    gain = np.sqrt(signal_power / (noise_power * 10 ** (snr_db / 10)))
    return (audio + gain * noise).astype(np.float32)


def reverb(audio: np.ndarray, rt60: float, wet: float, rng: np.random.Generator) -> np.ndarray:
    """A simple room: convolve with exponentially decaying noise whose energy falls 60 dB in `rt60` seconds,
    after a direct path; `wet` is the reverberant share of the output level."""
    n = int(rt60 * SAMPLE_RATE)
    t = np.arange(n) / SAMPLE_RATE
    tail = rng.standard_normal(n) * np.exp(-6.9078 * t / rt60)  # ln(1000) = 6.9078: -60 dB at rt60
    tail[: int(0.003 * SAMPLE_RATE)] = 0.0  # the first reflection arrives after ~3 ms
    tail /= np.sqrt(np.sum(tail**2)) + 1e-12
    wet_part = scipy.signal.fftconvolve(audio.astype(np.float64), tail)[: audio.size]
    dry_rms = np.sqrt(np.mean(audio.astype(np.float64) ** 2)) + 1e-12
    wet_rms = np.sqrt(np.mean(wet_part**2)) + 1e-12
    out = (1 - wet) * audio + wet * wet_part * (dry_rms / wet_rms)
    return out.astype(np.float32)


def change_speed(audio: np.ndarray, factor: float) -> np.ndarray:
    """Play `factor` times faster (tempo and pitch together, like tape), by polyphase resampling with
    `factor` rounded to a multiple of 1/20."""
    up = 20
    down = round(factor * up)
    if down == up:
        return audio.copy()
    return scipy.signal.resample_poly(audio.astype(np.float64), up, down).astype(np.float32)


# The telephone channel's pass band (ITU-T G.712, narrowband speech).
PHONE_BAND_HZ = (300.0, 3400.0)


def telephone(audio: np.ndarray) -> np.ndarray:
    """`audio` through a narrowband telephone channel: a 4th-order Butterworth band pass, 300-3400 Hz."""
    sos = scipy.signal.butter(4, PHONE_BAND_HZ, btype="bandpass", fs=SAMPLE_RATE, output="sos")
    return scipy.signal.sosfilt(sos, audio.astype(np.float64)).astype(np.float32)


def augment(
    audio: np.ndarray,
    rng: np.random.Generator,
    noise: bool = True,
    room: bool = True,
    speed: bool = True,
    phone: bool = True,
) -> tuple[np.ndarray, dict]:
    """A random augmentation chain (speed, room and noise each with probability 0.4, then the telephone band with
    probability 0.1), returned with its description, e.g. {"speed": 1.1, "reverb_rt60": 0.4, "noise": "pink",
    "snr_db": 10.0, "telephone": True}; {} means the clean clip."""
    info: dict = {}
    if speed and rng.random() < 0.4:
        factor = float(rng.choice([0.9, 0.95, 1.05, 1.1]))
        audio = change_speed(audio, factor)
        info["speed"] = factor
    if room and rng.random() < 0.4:
        rt60 = round(float(rng.uniform(0.2, 0.8)), 2)
        audio = reverb(audio, rt60, wet=float(rng.uniform(0.2, 0.5)), rng=rng)
        info["reverb_rt60"] = rt60
    if noise and rng.random() < 0.4:
        color = NOISE_COLORS[int(rng.integers(len(NOISE_COLORS)))]
        snr = float(rng.choice(SNRS_DB))
        audio = add_noise(audio, snr, color, rng)
        info["noise"] = color
        info["snr_db"] = snr
    if phone and rng.random() < 0.1:  # after the noise: the line band-limits the room and the noise too
        audio = telephone(audio)
        info["telephone"] = True
    return audio, info


def finalize(audio: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Set the level (peak between -12 and -1 dBFS, the gain augmentation) and quantize to int16."""
    peak = float(np.abs(audio).max())
    target = 10 ** (rng.uniform(-12.0, -1.0) / 20)
    return to_int16(audio.astype(np.float64) * (target / peak if peak > 0 else 0.0))


def to_int16(audio: np.ndarray) -> np.ndarray:
    """Quantize [-1, 1] floats to int16 (rounded, clipped); the level is left as it is."""
    return np.clip(np.round(np.asarray(audio, np.float64) * 32767.0), -32768, 32767).astype(np.int16)
