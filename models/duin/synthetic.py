"""Synthetic sEEG for spoken-word decoding: the data the bundled Du-IN model is trained on.
No real sEEG word data is available here; this generator stands in for it, and every model
trained on it is labelled "synthetic".

A "subject" (fixed by `subject_seed`) has 10 bipolar channels at 1 kHz. Each of the 61 words
has a spatiotemporal signature on that subject's channels:
  * high-gamma (70-150 Hz) envelope bursts on 2-4 channels, each at a word-specific latency
    (0.15-1.6 s after onset) and duration (0.15-0.45 s), as speech-motor and auditory cortex
    respond during articulation;
  * a slow (2-8 Hz) evoked deflection on the same channels;
  * a burst shared by all words on one channel (speech onset), which carries no identity.
Words are built from a small set of shared "phoneme" components (latency/channel pairs), so
different words overlap, as real words share phonemes. Background: 1/f noise per channel
with some cross-channel mixing, 50 Hz line noise with drifting amplitude. Trial to trial:
latency jitter (30 ms s.d.), amplitude variability (lognormal), and random channel gain.
"""
from __future__ import annotations

import numpy as np
from scipy import signal

RATE = 1000.0
N_CHANNELS = 10
N_WORDS = 61
TMIN, TMAX = -0.5, 2.5
WINDOW = int(round((TMAX - TMIN) * RATE))
CHANNELS = [f"sEEG{i + 1}" for i in range(N_CHANNELS)]
WORDS = [f"word{i + 1:02d}" for i in range(N_WORDS)]


class Subject:
    def __init__(self, subject_seed: int = 0, snr: float = 1.0):
        rng = np.random.default_rng(10_000 + subject_seed)
        self.snr = snr
        # Shared components ("phonemes"): (channel, latency, duration).
        n_components = 24
        self.components = [(int(rng.integers(1, N_CHANNELS)), float(rng.uniform(0.15, 1.6)), float(rng.uniform(0.15, 0.45)))
                           for _ in range(n_components)]
        # Each word = 3 components, unique combination.
        combos = set()
        self.words = []
        while len(self.words) < N_WORDS:
            combo = tuple(sorted(rng.choice(n_components, 3, replace=False).tolist()))
            if combo not in combos:
                combos.add(combo)
                self.words.append(combo)
        self.mixing = np.eye(N_CHANNELS) + 0.15 * rng.standard_normal((N_CHANNELS, N_CHANNELS))
        self.hg_sos = signal.butter(4, (70, 150), btype="bandpass", fs=RATE, output="sos")

    def background(self, n: int, rng) -> np.ndarray:
        white = rng.standard_normal((n, N_CHANNELS))
        spectrum = np.fft.rfft(white, axis=0)
        f = np.fft.rfftfreq(n, 1 / RATE)
        f[0] = f[1]
        pink = np.fft.irfft(spectrum / f[:, None] ** 0.5, n=n, axis=0)
        pink /= pink.std(axis=0, keepdims=True)
        t = np.arange(n) / RATE
        line = (0.3 + 0.1 * np.sin(2 * np.pi * 0.05 * t))[:, None] * np.sin(2 * np.pi * 50 * t[:, None] + rng.uniform(0, 2 * np.pi, N_CHANNELS))
        return (pink @ self.mixing.T + line) * 20.0

    def response(self, word: int, n: int, onset: int, rng) -> np.ndarray:
        """Word-specific activity over `n` samples, the word spoken at sample `onset`."""
        out = np.zeros((n, N_CHANNELS))
        gain = rng.lognormal(0.0, 0.2, N_CHANNELS)
        t = (np.arange(n) - onset) / RATE
        carrier = signal.sosfilt(self.hg_sos, rng.standard_normal((n, N_CHANNELS)), axis=0)
        carrier /= carrier.std(axis=0, keepdims=True) + 1e-9
        parts = [(0, 0.1, 0.3)] + [self.components[c] for c in self.words[word]]
        for channel, latency, duration in parts:
            lat = latency + rng.normal(0, 0.03)
            amplitude = rng.lognormal(0.0, 0.3) * self.snr
            envelope = np.exp(-0.5 * ((t - lat - duration / 2) / (duration / 3)) ** 2)
            out[:, channel] += 30.0 * amplitude * envelope * carrier[:, channel]
            slow = np.sin(2 * np.pi * (2 + 6 * (latency / 1.6)) * (t - lat)) * envelope
            out[:, channel] += 60.0 * amplitude * slow
        return out * gain

    def trials(self, n_per_word: int, seed: int):
        """Epochs [N, WINDOW, C] (float32) around word onset, and their word indices."""
        rng = np.random.default_rng(seed)
        labels = np.repeat(np.arange(N_WORDS), n_per_word)
        rng.shuffle(labels)
        onset = int(-TMIN * RATE)
        x = np.stack([self.background(WINDOW, rng) + self.response(w, WINDOW, onset, rng) for w in labels])
        return x.astype(np.float32), labels

    def stream(self, n_trials: int, seed: int, spacing_s=(3.2, 3.8)):
        """A continuous recording: samples [n, C] float32 and (onset sample, word) markers."""
        rng = np.random.default_rng(seed)
        onsets, t = [], 1.0
        for _ in range(n_trials):
            onsets.append(int(t * RATE))
            t += rng.uniform(*spacing_s)
        n = int((t + 1.0) * RATE)
        x = self.background(n, rng)
        words = rng.integers(0, N_WORDS, n_trials)
        span = int(3.0 * RATE)
        for onset, word in zip(onsets, words):
            lo, hi = max(0, onset - 500), min(n, onset - 500 + span)
            x[lo:hi] += self.response(int(word), hi - lo, onset - lo, rng)
        return x.astype(np.float32), list(zip(onsets, words.tolist()))
