"""Simulated MEG of a person viewing images: the data the bundled brain module is trained on.
No image-labelled MEG is available here; this simulator stands in for it, and every model
trained on it is labelled "synthetic".

Images: a fixed universe of images (`World`), each with a 24-dimensional latent feature vector.
Its "pretrained image-model embedding" (768 dims, like DINOv2-base) is a fixed non-linear map of
the latent (tanh layer, then a linear map) plus image-specific detail the brain never sees
(30 % of the variance), L2-normalised.

Brain (`Subject`): 16 cortical sources at fixed places over occipital, parietal and temporal
cortex, seen by the 275 CTF sensors through a fixed lead-field-like mixing: each source is a
current dipole whose field on the flattened helmet (real CTF-275 layout positions from MNE) is
the derivative of a Gaussian along its orientation (a bipolar in/out pattern, as MEG sees a
tangential dipole), plus a weak monopolar part. Each source emits four evoked components
(gamma-shaped, peaking near 100, 170, 250 and 400 ms after image onset); their amplitudes are
fixed non-linear functions (tanh of a random projection) of the image latent, plus an onset
response common to every image. Trial to trial: latency jitter (15 ms s.d.), lognormal gain
(0.25), and a random gain per source (0.15). Background: 1/f ("pink") activity of 60 random
dipoles through the same kind of mixing, 10 Hz alpha over occipital sensors with drifting
amplitude, and white sensor noise. Values are in femtotesla at 120 Hz (the paper's rate).
"""
from __future__ import annotations

import numpy as np

RATE = 120.0
TMIN, TMAX = -0.5, 1.0
WINDOW = int(round((TMAX - TMIN) * RATE))
EMBED_DIM = 768
LATENT_DIM = 24
N_SOURCES = 16
COMPONENT_LATENCIES = (0.10, 0.17, 0.25, 0.40)
COMPONENT_WIDTHS = (0.03, 0.04, 0.06, 0.10)


def _layout():
    import json
    from pathlib import Path

    data = json.loads((Path(__file__).with_name("ctf275_layout.json")).read_text())
    return data["names"], np.asarray(data["positions"], dtype=np.float64)


CHANNELS, POSITIONS = _layout()


class World:
    """The images: latents and their embeddings, fixed by `world_seed`."""

    def __init__(self, n_images: int = 2000, world_seed: int = 0):
        rng = np.random.default_rng(50_000 + world_seed)
        self.latent = rng.standard_normal((n_images, LATENT_DIM))
        w1 = rng.standard_normal((LATENT_DIM, 256)) / np.sqrt(LATENT_DIM)
        w2 = rng.standard_normal((256, EMBED_DIM)) / np.sqrt(256)
        visible = np.tanh(self.latent @ w1 * 1.5) @ w2
        visible /= visible.std()
        detail = rng.standard_normal((n_images, EMBED_DIM)) * np.sqrt(0.3 / 0.7)
        emb = visible + detail
        self.embeddings = (emb / np.linalg.norm(emb, axis=1, keepdims=True)).astype(np.float32)
        self.ids = [f"img{i:05d}" for i in range(n_images)]


def _dipole_fields(rng, centres, n: int, spread=(0.07, 0.14)) -> np.ndarray:
    """[n_sensors, n] field patterns of n dipoles at `centres` (layout coordinates)."""
    fields = np.empty((len(POSITIONS), n))
    for k in range(n):
        d = POSITIONS - centres[k]
        sigma = rng.uniform(*spread)
        angle = rng.uniform(0, 2 * np.pi)
        u = np.array([np.cos(angle), np.sin(angle)])
        g = np.exp(-(d ** 2).sum(1) / (2 * sigma ** 2))
        field = (d @ u) / sigma * g + 0.2 * g
        fields[:, k] = field / np.abs(field).max()
    return fields


def _pink(rng, n_samples: int, n: int) -> np.ndarray:
    """[n_samples, n] unit-variance 1/f noise (spectral shaping of white noise)."""
    white = rng.standard_normal((n_samples, n))
    spectrum = np.fft.rfft(white, axis=0)
    freqs = np.fft.rfftfreq(n_samples, 1 / RATE)
    spectrum /= np.sqrt(np.maximum(freqs, 0.5))[:, None]
    x = np.fft.irfft(spectrum, n=n_samples, axis=0)
    return x / x.std(axis=0, keepdims=True)


class Subject:
    """One simulated brain + sensor array, fixed by `subject_seed`."""

    def __init__(self, subject_seed: int = 0, snr: float = 1.0):
        rng = np.random.default_rng(60_000 + subject_seed)
        self.snr = snr
        lo, hi = POSITIONS.min(0), POSITIONS.max(0)
        span = hi - lo
        # Visual sources: posterior half of the helmet (the layout's lower y is posterior).
        centres = lo + span * np.column_stack([rng.uniform(0.15, 0.85, N_SOURCES), rng.uniform(0.0, 0.45, N_SOURCES)])
        self.leadfield = _dipole_fields(rng, centres, N_SOURCES)  # [275, 16]
        n_comp = len(COMPONENT_LATENCIES)
        # Image-dependent amplitude of every (source, component): tanh of a projection.
        self.amp_proj = rng.standard_normal((LATENT_DIM, N_SOURCES * n_comp)) / np.sqrt(LATENT_DIM) * 1.5
        self.amp_bias = rng.standard_normal(N_SOURCES * n_comp) * 0.3
        self.onset = rng.standard_normal(N_SOURCES) * 0.8  # common onset response (first component)
        bg_centres = lo + span * rng.uniform(0, 1, (60, 2))
        self.bg_leadfield = _dipole_fields(rng, bg_centres, 60, spread=(0.05, 0.2))
        self.alpha_field = _dipole_fields(rng, lo + span * np.array([[0.5, 0.12], [0.35, 0.2], [0.65, 0.2]]), 3, spread=(0.15, 0.2))

    def evoked(self, latent: np.ndarray, rng) -> np.ndarray:
        """[WINDOW_AFTER, 275] response to one image (from onset, 1 s), one trial's variability."""
        n_comp = len(COMPONENT_LATENCIES)
        n = int(round(TMAX * RATE))
        t = np.arange(n) / RATE
        amps = np.tanh(latent @ self.amp_proj + self.amp_bias).reshape(N_SOURCES, n_comp)
        amps[:, 0] += self.onset
        amps *= np.exp(rng.normal(0, 0.15, (N_SOURCES, 1)))
        jitter = rng.normal(0, 0.015)
        gain = np.exp(rng.normal(0, 0.25))
        sources = np.zeros((n, N_SOURCES))
        for c, (lat, width) in enumerate(zip(COMPONENT_LATENCIES, COMPONENT_WIDTHS)):
            tc = (t - lat - jitter) / width
            wave = np.where(tc > -3, np.exp(-0.5 * tc ** 2), 0.0) * (1 if c % 2 == 0 else -1)
            sources += wave[:, None] * amps[None, :, c]
        return gain * 36.0 * self.snr * sources @ self.leadfield.T  # fT

    def background(self, n_samples: int, rng) -> np.ndarray:
        """[n_samples, 275] ongoing activity + sensor noise, in fT."""
        brain = _pink(rng, n_samples, 60) @ self.bg_leadfield.T * 60.0
        t = np.arange(n_samples) / RATE
        alpha_amp = 1 + 0.5 * np.sin(2 * np.pi * t / rng.uniform(4, 9) + rng.uniform(0, 6))
        phases = rng.uniform(0, 2 * np.pi, 3)
        alpha = np.column_stack([np.sin(2 * np.pi * (10 + 0.3 * i) * t + phases[i]) for i in range(3)]) * alpha_amp[:, None]
        return brain + alpha @ self.alpha_field.T * 40.0 + rng.standard_normal((n_samples, len(CHANNELS))) * 30.0

    def stream(self, world: World, images, seed: int, spacing_s=(1.3, 1.7), lead_s: float = 2.0):
        """A continuous recording showing `images` (indices into `world`) in order.
        Returns (samples [n, 275] float32 fT, onsets [(sample index, image index)])."""
        rng = np.random.default_rng(seed)
        gaps = rng.uniform(*spacing_s, len(images))
        onsets = (lead_s + np.concatenate([[0.0], np.cumsum(gaps[:-1])])) * RATE
        onsets = np.round(onsets).astype(int)
        n_samples = int(onsets[-1] + TMAX * RATE + RATE)
        x = self.background(n_samples, rng)
        for onset, image in zip(onsets, images):
            response = self.evoked(world.latent[image], rng)
            x[onset:onset + len(response)] += response
        return x.astype(np.float32), [(int(o), int(i)) for o, i in zip(onsets, images)]
