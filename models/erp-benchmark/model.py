"""The ERP benchmark's model families (DL4mHealth/ERP-Benchmark, arXiv 2601.00573), reimplemented
from the facts of the authors' code for input [batch, time, channels] (their layout):

* TemporalSpatialConv: the benchmark's "EEGNet" (layers/Conv_Blocks.py): 2,226 parameters for
  any channel count.
* EEGInception: three inception blocks (kernels 8/16/32 samples, 96/192/384 feature maps), each
  followed by a pointwise mixing block.
* EEGConformer: a ShallowNet patch embedding, six post-norm transformer layers (d_model 128,
  8 heads, feed-forward 256), a linear head over every token.
* ERPFeatures: the 91 manual features per channel (temporal-pyramid statistics, peaks,
  periodogram band powers and shape, spectral entropy, Hjorth parameters) and one linear layer.

Everything is written with operators that export to ONNX as they are (the benchmark's adaptive
pooling to a larger size becomes a mean and a repeat; the periodogram is a product with fixed
cosine and sine bases), so the served graph computes what PyTorch trained.
"""
from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn
import torch.nn.functional as F


class TemporalSpatialConv(nn.Module):
    def __init__(self, n_channels: int, n_times: int, n_classes: int = 2, dropout: float = 0.1):
        super().__init__()
        del n_channels, n_times  # the network is the same for any montage and length
        self.temporal1 = nn.Conv2d(1, 16, (7, 1), padding=(3, 0), bias=False)
        self.bn1 = nn.BatchNorm2d(16, affine=False)
        self.temporal2 = nn.Conv2d(16, 16, (7, 1), padding=(3, 0), groups=16, bias=False)
        self.bn2 = nn.BatchNorm2d(16, affine=False)
        self.drop1 = nn.Dropout(dropout)
        self.spatial_dw = nn.Conv2d(16, 16, (3, 1), padding=(1, 0), groups=16, bias=False)
        self.spatial_pw = nn.Conv2d(16, 32, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(32, affine=False)
        self.mix_dw = nn.Conv2d(32, 32, (5, 1), padding=(2, 0), groups=32, bias=False)
        self.mix_pw = nn.Conv2d(32, 32, 1, bias=False)
        self.bn4 = nn.BatchNorm2d(32, affine=False)
        self.drop2 = nn.Dropout(dropout)
        self.fc = nn.Linear(128, n_classes)

    def forward(self, x):  # [B, T, C]
        x = x.unsqueeze(1)  # [B, 1, T, C]
        x = F.elu(self.bn1(self.temporal1(x)))
        x = F.elu(self.bn2(self.temporal2(x)))
        x = self.drop1(x.mean(dim=2, keepdim=True))  # global average over time: [B, 16, 1, C]
        x = x.permute(0, 1, 3, 2)  # [B, 16, C, 1]: the channel axis is convolved next
        x = F.elu(self.bn3(self.spatial_pw(self.spatial_dw(x))))
        x = F.elu(self.bn4(self.mix_pw(self.mix_dw(x))))  # [B, 32, C, 1]
        # The benchmark's AdaptiveAvgPool2d((1, 4)) on a [C, 1] map: the mean over channels,
        # each value repeated 4 times (index = feature * 4 + j).
        x = x.mean(dim=(2, 3)).unsqueeze(-1).expand(-1, -1, 4).reshape(x.shape[0], 128)
        return self.fc(self.drop2(x))


class _InceptionBlock(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, dropout: float, kernels=(8, 16, 32), bottleneck: int = 32):
        super().__init__()
        self.bottleneck = nn.Conv1d(in_channels, bottleneck, 1, bias=False)
        self.branches = nn.ModuleList(nn.Conv1d(bottleneck, out_channels // 3, k, padding=k // 2, bias=False) for k in kernels)
        self.bn = nn.BatchNorm1d(out_channels)
        self.drop = nn.Dropout(dropout)

    def forward(self, x):
        b = self.bottleneck(x)
        return self.drop(F.relu(self.bn(torch.cat([branch(b) for branch in self.branches], dim=1))))


class _MixingBlock(nn.Module):
    """The benchmark's "SpatialBlock": a grouped then a plain 1x1 convolution over feature maps."""

    def __init__(self, channels: int, depth: int = 2):
        super().__init__()
        self.grouped = nn.Conv1d(channels, channels * depth, 1, groups=channels, bias=False)
        self.pointwise = nn.Conv1d(channels * depth, channels, 1, bias=False)
        self.bn = nn.BatchNorm1d(channels)

    def forward(self, x):
        return F.relu(self.bn(self.pointwise(self.grouped(x))))


class EEGInception(nn.Module):
    def __init__(self, n_channels: int, n_times: int, n_classes: int = 2, dropout: float = 0.1):
        super().__init__()
        del n_times
        widths = [n_channels, 96, 192, 384]
        blocks = []
        for a, b in zip(widths[:-1], widths[1:]):
            blocks += [_InceptionBlock(a, b, dropout), _MixingBlock(b)]
        self.blocks = nn.Sequential(*blocks)
        self.drop = nn.Dropout(dropout)
        self.fc = nn.Linear(384, n_classes)

    def forward(self, x):  # [B, T, C]
        x = self.blocks(x.permute(0, 2, 1))  # Conv1d over time, channels as feature maps
        return self.fc(self.drop(x.mean(dim=2)))


class _EncoderLayer(nn.Module):
    def __init__(self, d_model: int, heads: int, d_ff: int, dropout: float):
        super().__init__()
        self.heads = heads
        self.q, self.k, self.v, self.out = (nn.Linear(d_model, d_model) for _ in range(4))
        self.attention_drop = nn.Dropout(dropout)
        self.drop = nn.Dropout(dropout)
        self.ff1 = nn.Linear(d_model, d_ff)  # the benchmark's 1x1 Conv1d
        self.ff2 = nn.Linear(d_ff, d_model)
        self.norm1 = nn.LayerNorm(d_model)
        self.norm2 = nn.LayerNorm(d_model)

    def forward(self, x):  # [B, L, D]
        b, length, d = x.shape
        h = self.heads

        def split(t):
            return t.reshape(b, length, h, d // h).transpose(1, 2)

        q, k, v = split(self.q(x)), split(self.k(x)), split(self.v(x))
        weights = self.attention_drop(torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(d // h), dim=-1))
        attended = self.out((weights @ v).transpose(1, 2).reshape(b, length, d))
        x = self.norm1(x + self.drop(attended))
        y = self.drop(self.ff2(self.drop(F.gelu(self.ff1(x)))))
        return self.norm2(x + y)


class EEGConformer(nn.Module):
    def __init__(self, n_channels: int, n_times: int, n_classes: int = 2, dropout: float = 0.1,
                 d_model: int = 128, layers: int = 6, heads: int = 8, d_ff: int = 256):
        super().__init__()
        self.embed = nn.Sequential(
            nn.Conv2d(1, d_model, (1, 25)),
            nn.Conv2d(d_model, d_model, (n_channels, 1)),
            nn.BatchNorm2d(d_model),
            nn.ELU(),
            nn.AvgPool2d((1, 4), (1, 2)),
            nn.Dropout(dropout),
            nn.Conv2d(d_model, d_model, 1),
        )
        self.layers = nn.ModuleList(_EncoderLayer(d_model, heads, d_ff, dropout) for _ in range(layers))
        self.norm = nn.LayerNorm(d_model)
        self.drop = nn.Dropout(dropout)
        tokens = (n_times - 28) // 2 + 1
        self.fc = nn.Linear(d_model * tokens, n_classes)

    def forward(self, x):  # [B, T, C]
        x = self.embed(x.permute(0, 2, 1).unsqueeze(1))  # [B, D, 1, L]
        x = x.flatten(2).transpose(1, 2)  # [B, L, D]
        for layer in self.layers:
            x = layer(x)
        x = self.drop(F.gelu(self.norm(x)))
        return self.fc(x.flatten(1))


class ERPFeatureExtractor(nn.Module):
    """The benchmark's 91 features per channel of one (z-scored) trial, [B, T, C] -> [B, 91, C]."""

    LEVELS = (1, 2, 4, 8)
    BANDS = ((0.5, 4.0), (4.0, 8.0), (8.0, 12.0), (12.0, 30.0))

    def __init__(self, n_times: int, rate: float):
        super().__init__()
        self.n_times = n_times
        n = n_times
        window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n) / n)  # periodic Hann
        freqs = np.fft.rfftfreq(n, 1.0 / rate)
        basis = np.arange(n)[:, None] * np.arange(len(freqs))[None, :] * 2 * np.pi / n
        self.register_buffer("cos", torch.tensor(window[:, None] * np.cos(basis), dtype=torch.float32))
        self.register_buffer("sin", torch.tensor(window[:, None] * np.sin(basis), dtype=torch.float32))
        scale = np.full(len(freqs), 1.0 / (rate * (window ** 2).sum()))
        scale[1:len(freqs) - 1 if n % 2 == 0 else len(freqs)] *= 2.0  # one-sided: DC and Nyquist once
        self.register_buffer("scale", torch.tensor(scale, dtype=torch.float32))
        self.register_buffer("freqs", torch.tensor(freqs, dtype=torch.float32))
        df = float(freqs[1] - freqs[0])
        # Trapezoid weights over all bins and over each band's bins (lo <= f <= hi, >= 2 bins).
        self.register_buffer("trapezoid", torch.tensor(self._trapezoid(np.ones(len(freqs), bool), df), dtype=torch.float32))
        bands = []
        for lo, hi in self.BANDS:
            inside = (freqs >= lo) & (freqs <= hi)
            bands.append(self._trapezoid(inside, df) if inside.sum() >= 2 else np.zeros(len(freqs)))
        self.register_buffer("band_weights", torch.tensor(np.stack(bands, axis=1), dtype=torch.float32))
        # Cumulative trapezoid: cum[i] = sum over j < i of (P[j] + P[j + 1]) / 2 * df.
        m = len(freqs)
        cumulative = np.zeros((m, m))
        for i in range(1, m):
            cumulative[:i, i] += df / 2
            cumulative[1:i + 1, i] += df / 2
        self.register_buffer("cumulative", torch.tensor(cumulative, dtype=torch.float32))

    @staticmethod
    def _trapezoid(inside: np.ndarray, df: float) -> np.ndarray:
        idx = np.flatnonzero(inside)
        w = np.zeros(len(inside))
        w[idx[:-1]] += df / 2
        w[idx[1:]] += df / 2
        return w

    def forward(self, x):  # [B, T, C]
        x = x.permute(0, 2, 1)  # [B, C, T]
        t = self.n_times
        features = []
        for level in self.LEVELS:
            for k in range(level):
                seg = x[..., round(k * t / level):round((k + 1) * t / level)]
                mean = seg.mean(-1)
                features += [mean, torch.sqrt(((seg - mean.unsqueeze(-1)) ** 2).mean(-1)), torch.sqrt((seg ** 2).mean(-1) + 1e-9),
                             (seg[..., 1:] - seg[..., :-1]).abs().sum(-1), seg.amax(-1) - seg.amin(-1)]
        features += [x.amax(-1), x.argmax(-1).to(x.dtype) / (t - 1), x.amin(-1), x.argmin(-1).to(x.dtype) / (t - 1)]
        power = ((x @ self.cos) ** 2 + (x @ self.sin) ** 2) * self.scale  # [B, C, F]
        total = (power @ self.trapezoid).clamp(min=1e-12)
        bands = power @ self.band_weights  # [B, C, 4]
        features += [bands[..., i] / total for i in range(4)]
        centroid = ((power * self.freqs) @ self.trapezoid / total).clamp(min=0.0)
        clamped = power.clamp(min=1e-12)
        flatness = (torch.exp(torch.log(clamped).mean(-1)) / power.mean(-1).clamp(min=1e-12)).clamp(0.0, 1.0)
        reached = ((power @ self.cumulative) >= 0.5 * total.unsqueeze(-1)).to(x.dtype)
        median = self.freqs[reached.argmax(-1)]
        features += [total, centroid, flatness, median]
        p = clamped / clamped.sum(-1, keepdim=True)
        features.append(-(p * torch.log(p)).sum(-1) / math.log(power.shape[-1]))
        dx = x[..., 1:] - x[..., :-1]
        ddx = dx[..., 1:] - dx[..., :-1]

        def var(v):
            return ((v - v.mean(-1, keepdim=True)) ** 2).mean(-1)

        activity = var(x)
        mobility = torch.sqrt((var(dx) + 1e-9) / (activity + 1e-9))
        complexity = (torch.sqrt((var(ddx) + 1e-9) / (var(dx) + 1e-9)) / (mobility + 1e-9)).clamp(max=1e6)
        features += [activity, mobility, complexity]
        return torch.stack(features, dim=1)  # [B, 91, C]


class ERPFeatures(nn.Module):
    def __init__(self, n_channels: int, n_times: int, n_classes: int = 2, rate: float = 200.0):
        super().__init__()
        self.extract = ERPFeatureExtractor(n_times, rate)
        self.fc = nn.Linear(91 * n_channels, n_classes)

    def forward(self, x):  # [B, T, C]
        return self.fc(self.extract(x).flatten(1))  # feature-major: index = feature * C + channel


ARCHITECTURES = {
    "tsconv": TemporalSpatialConv,
    "eeginception": EEGInception,
    "eegconformer": EEGConformer,
    "erpfeatures": ERPFeatures,
}


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
