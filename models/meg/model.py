"""The brain module (Benchetrit, Banville & King 2023; after Defossez et al. 2023), in PyTorch.

MEG window [batch, sensors, time] + sensor layout positions [batch, sensors, 2] + sensor mask
[batch, sensors] (1 = present) -> image embedding [batch, embed_dim] (CLIP head; the MSE head's
output is the second output).

* Spatial attention: each sensor's 2-D layout position, min-max scaled with the full CTF-275
  layout's bounds (constants of the model, so inputs are plain layout coordinates), gets a
  Fourier embedding (cos/sin of 2*pi*(k x + l y) for k, l < n_freqs); a linear head scores every
  sensor for each virtual channel; a softmax over the present sensors (masked ones get -1e9)
  gives each virtual channel as a weighted sum of real sensors. Because positions and mask are
  inputs, one model serves any montage of the system and survives bad channels at run time.
* Then a 1x1 convolution, the subject layer (one channel-mixing matrix per subject), residual
  blocks of dilated Conv1d (kernel 3, dilation doubling in cycles of 5) + BatchNorm + GELU, with
  a GLU block every second block.
* Head: 1x1 conv to `head_dim`, learned affine aggregation over time (T -> 1), and two heads
  (LayerNorm, GELU, Linear) to the embedding dimension: one trained with a CLIP-style contrastive
  loss, one with MSE.

Sizes default to the paper's (270 virtual channels, 320 hidden, 2048 head, 32 frequencies); the
bundled model uses a smaller configuration (see its card) so it trains on two CPU cores.
"""
from __future__ import annotations

import math

import torch
from torch import nn


class FourierEmbedding(nn.Module):
    """cos/sin of positions at n_freqs^2 frequency pairs, with brainmagick's margin: the unit
    square is placed inside a period spanning [-margin, 1 + margin], so sensors at opposite edges
    of the layout do not embed alike (without it, with period 1, they alias)."""

    def __init__(self, n_freqs: int, margin: float = 0.2):
        super().__init__()
        self.margin = margin
        k = torch.arange(n_freqs, dtype=torch.float32)
        kx, ky = torch.meshgrid(k, k, indexing="ij")
        self.register_buffer("freqs", torch.stack([kx.flatten(), ky.flatten()], dim=0) * 2 * math.pi)  # [2, F]
        self.dim = 2 * n_freqs * n_freqs

    def forward(self, pos: torch.Tensor) -> torch.Tensor:  # [B, C, 2] in [0, 1]
        phase = ((pos + self.margin) / (1 + 2 * self.margin)) @ self.freqs  # [B, C, F]
        return torch.cat([torch.cos(phase), torch.sin(phase)], dim=-1)


class SpatialAttention(nn.Module):
    def __init__(self, n_virtual: int, n_freqs: int, pos_min, pos_max):
        super().__init__()
        self.embedding = FourierEmbedding(n_freqs)
        self.heads = nn.Linear(self.embedding.dim, n_virtual)
        # Sharp at the start: with default init the softmax is nearly uniform, every virtual
        # channel starts as the average of all sensors (which cancels dipolar fields), and
        # training stalls; scaled up, each starts near a few sensors.
        with torch.no_grad():
            self.heads.weight.mul_(20.0)
        self.register_buffer("pos_min", torch.as_tensor(pos_min, dtype=torch.float32))
        self.register_buffer("pos_range", torch.as_tensor(pos_max, dtype=torch.float32) - torch.as_tensor(pos_min, dtype=torch.float32))

    def forward(self, x, positions, mask):  # x [B, C, T], positions [B, C, 2], mask [B, C]
        pos = (positions - self.pos_min) / self.pos_range
        scores = self.heads(self.embedding(pos))  # [B, C, V]
        scores = scores + (mask.unsqueeze(-1) - 1.0) * 1e9
        weights = torch.softmax(scores, dim=1)  # over sensors
        return torch.einsum("bct,bcv->bvt", x, weights)


class ConvBlock(nn.Module):
    def __init__(self, channels: int, dilation: int, glu: bool, dropout: float):
        super().__init__()
        self.conv = nn.Conv1d(channels, channels, 3, padding=dilation, dilation=dilation)
        self.norm = nn.BatchNorm1d(channels)
        self.act = nn.GELU()
        self.dropout = nn.Dropout(dropout)
        self.glu = nn.Conv1d(channels, 2 * channels, 3, padding=1) if glu else None

    def forward(self, x):
        x = x + self.dropout(self.act(self.norm(self.conv(x))))
        if self.glu is not None:
            x = nn.functional.glu(self.glu(x), dim=1)
        return x


class BrainModule(nn.Module):
    def __init__(self, n_times: int, embed_dim: int, pos_min, pos_max, n_subjects: int = 1,
                 n_virtual: int = 270, hidden: int = 320, head_dim: int = 2048, n_freqs: int = 32,
                 n_blocks: int = 10, dropout: float = 0.2):
        super().__init__()
        self.config = dict(n_times=n_times, embed_dim=embed_dim, n_subjects=n_subjects, n_virtual=n_virtual,
                           hidden=hidden, head_dim=head_dim, n_freqs=n_freqs, n_blocks=n_blocks)
        self.attention = SpatialAttention(n_virtual, n_freqs, pos_min, pos_max)
        self.merge = nn.Conv1d(n_virtual, n_virtual, 1)
        self.subject_layers = nn.Parameter(torch.eye(n_virtual).repeat(n_subjects, 1, 1))
        self.subject = 0  # the subject baked into an export
        self.inp = nn.Conv1d(n_virtual, hidden, 1)
        self.blocks = nn.ModuleList(
            ConvBlock(hidden, 2 ** (i % 5), glu=(i % 2 == 1), dropout=dropout) for i in range(n_blocks))
        self.to_head = nn.Sequential(nn.Conv1d(hidden, head_dim, 1), nn.GELU())
        self.aggregate = nn.Linear(n_times, 1)  # learned affine aggregation over time
        self.clip_head = nn.Sequential(nn.LayerNorm(head_dim), nn.GELU(), nn.Linear(head_dim, embed_dim))
        self.mse_head = nn.Sequential(nn.LayerNorm(head_dim), nn.GELU(), nn.Linear(head_dim, embed_dim))

    def features(self, x, positions, mask, subject=None):
        s = self.subject if subject is None else subject
        h = self.merge(self.attention(x, positions, mask))
        h = torch.einsum("bvt,vw->bwt", h, self.subject_layers[s])
        h = self.inp(h)
        for block in self.blocks:
            h = block(h)
        h = self.to_head(h)  # [B, head, T]
        return self.aggregate(h).squeeze(-1)  # [B, head]

    def forward(self, x, positions, mask):
        f = self.features(x, positions, mask)
        return self.clip_head(f), self.mse_head(f)


def clip_loss(pred: torch.Tensor, target: torch.Tensor, log_scale: torch.Tensor) -> torch.Tensor:
    """Contrastive loss: each window must pick its own image among the batch's (cosine scores)."""
    p = nn.functional.normalize(pred, dim=-1)
    t = nn.functional.normalize(target, dim=-1)
    logits = p @ t.T * log_scale.exp()
    labels = torch.arange(len(p))
    return nn.functional.cross_entropy(logits, labels)


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
