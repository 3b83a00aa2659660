"""Du-IN inference architecture (Zheng et al. 2024, arXiv 2405.11459), reimplemented from the
paper's description:

    subject layer -> 100 ms patch tokenizer -> fixed sin/cos time embedding
    -> post-norm transformer encoder with LayerNorm on Q and K -> classification head

Input: [batch, T, C] sEEG at 1 kHz (T = 3000 for a 3 s window), C the subject's channels.
Output: per-word scores in [0, 1] (sigmoid, as the paper trains cross-entropy on the sigmoid
outputs; they do not sum to one).

Also the two optional pretraining stages (not part of the served graph): a VQ-VAE that learns a
codebook of discrete neural units (2048 x 64) from unlabelled sEEG, and masked modelling that
predicts the codebook indices of masked patches. Only subject layer, tokenizer and encoder
weights carry into the classifier.
"""
from __future__ import annotations

import math

import torch
from torch import nn
import torch.nn.functional as F


class PatchTokenizer(nn.Module):
    """Each 100-sample patch of the 16 virtual channels -> a 160-dim token:
    Conv1d(16->128, k19, s10) + BN, Conv1d(128->128, k3) + BN, Conv1d(128->16, k3) + BN, flatten."""

    def __init__(self, channels: int = 16, patch: int = 100):
        super().__init__()
        self.patch = patch
        self.convs = nn.Sequential(
            nn.Conv1d(channels, 128, 19, stride=10, padding=9), nn.BatchNorm1d(128),
            nn.Conv1d(128, 128, 3, padding=1), nn.BatchNorm1d(128),
            nn.Conv1d(128, channels, 3, padding=1), nn.BatchNorm1d(channels),
        )

    def forward(self, x):  # x: [B, T, 16]
        b, t, c = x.shape
        n = t // self.patch
        patches = x[:, : n * self.patch].reshape(b, n, self.patch, c).permute(0, 1, 3, 2).reshape(b * n, c, self.patch)
        tokens = self.convs(patches)  # [B*n, 16, 10]
        return tokens.reshape(b, n, -1)  # [B, n, 160]

    def token_dim(self) -> int:
        return 16 * ((self.patch + 2 * 9 - 19) // 10 + 1)


def sincos_embedding(n: int, dim: int) -> torch.Tensor:
    position = torch.arange(n, dtype=torch.float32)[:, None]
    div = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * (-math.log(10000.0) / dim))
    table = torch.zeros(n, dim)
    table[:, 0::2] = torch.sin(position * div)
    table[:, 1::2] = torch.cos(position * div)
    return table


class Block(nn.Module):
    """Post-norm transformer block with LayerNorm applied to Q and K (per head)."""

    def __init__(self, dim: int = 160, heads: int = 8, head_dim: int = 64, ff: int = 320, dropout: float = 0.1):
        super().__init__()
        self.heads, self.head_dim = heads, head_dim
        inner = heads * head_dim
        self.qkv = nn.Linear(dim, 3 * inner)
        self.q_norm, self.k_norm = nn.LayerNorm(head_dim), nn.LayerNorm(head_dim)
        self.out = nn.Linear(inner, dim)
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.ff = nn.Sequential(nn.Linear(dim, ff), nn.ReLU(), nn.Dropout(dropout), nn.Linear(ff, dim))
        self.drop = nn.Dropout(dropout)

    def forward(self, x):
        b, n, _ = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k = self.q_norm(q), self.k_norm(k)
        attention = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(self.head_dim), dim=-1)
        mixed = (attention @ v).transpose(1, 2).reshape(b, n, -1)
        x = self.norm1(x + self.drop(self.out(mixed)))
        return self.norm2(x + self.drop(self.ff(x)))


class DuINEncoder(nn.Module):
    """Subject layer + tokenizer + time embedding + encoder: what pretraining and the classifier share."""

    def __init__(self, n_channels: int, n_subjects: int = 1, window: int = 3000, depth: int = 8, virtual_channels: int = 16):
        super().__init__()
        self.subject_layers = nn.ModuleList([nn.Linear(n_channels, virtual_channels) for _ in range(n_subjects)])
        self.tokenizer = PatchTokenizer(virtual_channels)
        self.n_tokens = window // self.tokenizer.patch
        self.dim = self.tokenizer.token_dim()
        self.register_buffer("time_embedding", sincos_embedding(self.n_tokens, self.dim), persistent=False)
        self.blocks = nn.ModuleList([Block(self.dim) for _ in range(depth)])
        self.mask_token = nn.Parameter(torch.zeros(self.dim))

    def subject_layer(self, x, subject):
        """Each sample through its own subject's layer: `subject` is one index for the whole
        batch (the served graph: one subject per export) or a LongTensor [B] (mixed batches in
        training, never dropped or forced through the first sample's layer)."""
        if not isinstance(subject, int) and bool((subject == subject[0]).all()):
            subject = int(subject[0])  # one subject in the batch: its layer, as the served graph
        if isinstance(subject, int):
            return self.subject_layers[subject](x)
        weights = torch.stack([layer.weight for layer in self.subject_layers])[subject]  # [B, V, C]
        biases = torch.stack([layer.bias for layer in self.subject_layers])[subject]  # [B, V]
        return torch.einsum("btc,bvc->btv", x, weights) + biases[:, None, :]

    def tokens(self, x, subject=0):
        return self.tokenizer(self.subject_layer(x, subject))

    def encode(self, tokens, mask=None):
        if mask is not None:  # masked modelling: hide patches behind a learned token
            tokens = torch.where(mask[..., None], self.mask_token.expand_as(tokens), tokens)
        h = tokens + self.time_embedding
        for block in self.blocks:
            h = block(h)
        return h

    def forward(self, x, subject=0):
        return self.encode(self.tokens(x, subject))


class DuINClassifier(nn.Module):
    """Encoder + head: flatten (30 x 160) -> 128 -> ReLU -> n_words -> sigmoid."""

    def __init__(self, n_channels: int, n_words: int = 61, n_subjects: int = 1, window: int = 3000, depth: int = 8):
        super().__init__()
        self.encoder = DuINEncoder(n_channels, n_subjects, window, depth)
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(self.encoder.n_tokens * self.encoder.dim, 128), nn.ReLU(),
                                  nn.Dropout(0.2), nn.Linear(128, n_words))
        self.subject = 0

    def logits(self, x, subject=None):
        return self.head(self.encoder(x, self.subject if subject is None else subject))

    def forward(self, x):  # the served graph: one subject, sigmoid scores
        return torch.sigmoid(self.logits(x))


class VectorQuantizer(nn.Module):
    """Codebook of discrete neural units (2048 x 64), straight-through, with commitment loss."""

    def __init__(self, dim: int, codes: int = 2048, code_dim: int = 64, beta: float = 0.25):
        super().__init__()
        self.down, self.up = nn.Linear(dim, code_dim), nn.Linear(code_dim, dim)
        self.codebook = nn.Embedding(codes, code_dim)
        self.codebook.weight.data.uniform_(-1.0 / codes, 1.0 / codes)
        self.beta = beta

    def forward(self, h):
        z = F.normalize(self.down(h), dim=-1)
        book = F.normalize(self.codebook.weight, dim=-1)
        indices = (z @ book.T).argmax(-1)
        q = book[indices]
        loss = F.mse_loss(q, z.detach()) + self.beta * F.mse_loss(z, q.detach())
        q = z + (q - z).detach()
        return self.up(q), indices, loss


class DuINVQVAE(nn.Module):
    """Pretraining stage 1: encode patches, quantise to the codebook, and reconstruct the raw
    input from the codes: decoder blocks, a regressor back to each patch's samples in the
    virtual channels, then each subject's de-subject layer back to its own contacts (the
    authors' regressor is a transposed convolution; a linear layer per patch here)."""

    def __init__(self, encoder: DuINEncoder, n_channels: int, n_subjects: int = 1, patch: int = 100, virtual_channels: int = 16,
                 decoder_blocks: int = 4):
        super().__init__()
        self.encoder = encoder
        self.quantizer = VectorQuantizer(encoder.dim)
        self.decoder = nn.Sequential(*[Block(encoder.dim) for _ in range(decoder_blocks)])
        self.regressor = nn.Linear(encoder.dim, patch * virtual_channels)
        self.desubject = nn.ModuleList([nn.Linear(virtual_channels, n_channels) for _ in range(n_subjects)])
        self.patch, self.virtual_channels = patch, virtual_channels

    def forward(self, x, subject=0):
        b = x.shape[0]
        n = self.encoder.n_tokens * self.patch
        h = self.encoder(x, subject)
        q, indices, vq_loss = self.quantizer(h)
        virtual = self.regressor(self.decoder(q)).reshape(b, n, self.virtual_channels)
        if not isinstance(subject, int) and bool((subject == subject[0]).all()):
            subject = int(subject[0])
        if isinstance(subject, int):
            reconstruction = self.desubject[subject](virtual)
        else:
            weights = torch.stack([layer.weight for layer in self.desubject])[subject]  # [B, C, V]
            biases = torch.stack([layer.bias for layer in self.desubject])[subject]
            reconstruction = torch.einsum("btv,bcv->btc", virtual, weights) + biases[:, None, :]
        return F.mse_loss(reconstruction, x[:, :n]) + vq_loss, indices


class DuINMAE(nn.Module):
    """Pretraining stage 2: mask patches, predict their codebook indices (from a frozen VQ-VAE)."""

    def __init__(self, encoder: DuINEncoder, codes: int = 2048):
        super().__init__()
        self.encoder = encoder
        self.predict = nn.Linear(encoder.dim, codes)

    def forward(self, x, target_indices, subject=0, generator: torch.Generator | None = None):
        """Exactly half of each sample's patches masked (a random half), and the complementary
        half in a second pass, so every patch is predicted once per step."""
        tokens = self.encoder.tokens(x, subject)
        b, n = tokens.shape[:2]
        order = torch.rand(b, n, generator=generator).argsort(dim=1)
        mask = torch.zeros(b, n, dtype=torch.bool)
        mask.scatter_(1, order[:, : n // 2], True)
        loss = 0.0
        for hidden in (mask, ~mask):
            h = self.encoder.encode(tokens, hidden)
            loss = loss + F.cross_entropy(self.predict(h[hidden]), target_indices[hidden])
        return loss / 2


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
