"""The time-conditioned U-Net denoiser of CCDM (Zbinden et al., ICCV 2023): the "OpenAI" diffusion U-Net (Dhariwal &
Nichol 2021, ``guided_diffusion/unet.py``) as the authors' code configures it
(github.com/LarsDoorenbos/ccdm-stochastic-segmentation, ``ddpm/models/unet_openai/unet.py``, ``builder.py``,
``params.yml``): the input is the noisy one-hot mask x_t concatenated with the image, the output a softmax over
the L classes, p(x_0 | x_t, image).

Layout, per resolution level i (``filters[i]`` channels; the reference's base 32 x channel multipliers):
``res_blocks`` residual blocks (GroupNorm -> SiLU -> conv3x3, + the step embedding projected by SiLU -> linear, ->
GroupNorm -> SiLU -> dropout -> zero-initialised conv3x3; skip conv1x1 when the width changes), each followed by
multi-head self-attention (GroupNorm, qkv conv1x1, zero-initialised output projection) where the level's
downsampling factor is in ``attention_ds``; between levels a stride-2 conv3x3 (``conv_resample``); a middle block
res-attention-res; the decoder mirrors it with ``res_blocks + 1`` blocks per level on the concatenated skips and a
nearest x2 upsampling + conv3x3; the output GroupNorm -> SiLU -> zero-initialised conv3x3 -> softmax. The step t
enters through the sinusoidal embedding of dimension ``filters[0]`` (max period 10,000) -> linear -> SiLU ->
linear to 4 x ``filters[0]``.

Deviations (none changes the reference configuration's function): GroupNorm uses gcd(32, channels) groups (the
reference's 32 groups need widths divisible by 32: the quick preset's 16-channel level has 16 groups); attention
heads are ``channels // head_channels`` when that divides, else one head; attention is computed with
``torch.nn.functional.scaled_dot_product_attention`` (the same softmax(q k^T / sqrt(c)) v); an image whose side
is not a multiple of 2^(levels - 1) is zero-padded to one and the output cropped back.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import cast

import torch
from torch import nn
from torch.nn import functional as F


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10_000.0) -> torch.Tensor:
    """Sinusoidal embedding of the steps t (float or long [B]) -> [B, dim]: cos then sin of t * exp(-log(max_period)
    * k / (dim // 2)), k = 0 .. dim // 2 - 1, zero-padded to ``dim`` (``guided_diffusion``'s ``timestep_embedding``)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t.float()[:, None] * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], -1)
    return F.pad(emb, (0, dim % 2))


def group_norm(channels: int) -> nn.GroupNorm:
    """GroupNorm with gcd(32, channels) groups (the reference: 32)."""
    return nn.GroupNorm(math.gcd(32, channels), channels)


def _zero(module: nn.Module) -> nn.Module:
    for p in module.parameters():
        nn.init.zeros_(p)
    return module


class ResBlock(nn.Module):
    """Residual block conditioned on the step embedding (``guided_diffusion``'s ``ResBlock`` without scale-shift
    norm, up/down-sampling or checkpointing)."""

    def __init__(self, cin: int, cout: int, emb_dim: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.in_layers = nn.Sequential(group_norm(cin), nn.SiLU(), nn.Conv2d(cin, cout, 3, padding=1))
        self.emb_layers = nn.Sequential(nn.SiLU(), nn.Linear(emb_dim, cout))
        self.out_layers = nn.Sequential(group_norm(cout), nn.SiLU(), nn.Dropout(dropout),
                                        _zero(nn.Conv2d(cout, cout, 3, padding=1)))
        self.skip: nn.Module = nn.Identity() if cin == cout else nn.Conv2d(cin, cout, 1)

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.in_layers(x) + self.emb_layers(emb)[:, :, None, None]
        return self.skip(x) + self.out_layers(h)


class AttentionBlock(nn.Module):
    """Multi-head self-attention over the pixels, residual, zero-initialised output projection."""

    def __init__(self, channels: int, head_channels: int = 32) -> None:
        super().__init__()
        self.heads = channels // head_channels if head_channels > 0 and channels % head_channels == 0 else 1
        self.norm = group_norm(channels)
        self.qkv = nn.Conv1d(channels, 3 * channels, 1)
        self.proj = _zero(nn.Conv1d(channels, channels, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        flat = x.reshape(b, c, h * w)
        # the reference's QKVAttentionLegacy: heads split before q, k, v
        q, k, v = self.qkv(self.norm(flat)).reshape(b * self.heads, 3 * c // self.heads, h * w).chunk(3, 1)
        a = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
        out = self.proj(a.transpose(1, 2).reshape(b, c, h * w))
        return (flat + out).reshape(b, c, h, w)


class _Stage(nn.Module):
    """A residual block, optionally followed by attention."""

    def __init__(self, cin: int, cout: int, emb_dim: int, attention: bool, head_channels: int, dropout: float) -> None:
        super().__init__()
        self.res = ResBlock(cin, cout, emb_dim, dropout)
        self.attention: nn.Module = AttentionBlock(cout, head_channels) if attention else nn.Identity()

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.attention(self.res(x, emb))
        return out


class DiffusionUNet(nn.Module):
    """p(x_0 | x_t, image): [B, L + C, H, W] (one-hot x_t, then the image) and steps t [B] -> probabilities
    [B, L, H, W] (softmax over the L classes).

    Args:
        in_channels: L + C.
        classes: L.
        filters: channels per resolution level (the reference LIDC model: base 32 x (1, 2, 2, 4, 5)).
        res_blocks: residual blocks per level in the encoder (the decoder has one more; reference: 2).
        attention_ds: the downsampling factors (1, 2, 4, ...) of the levels with attention (reference: 8, 16, 32;
            the middle block always attends).
        head_channels: channels per attention head (reference: 32).
        dropout: in the residual blocks (reference: 0).
    """

    def __init__(self, in_channels: int, classes: int, filters: Sequence[int], res_blocks: int = 2,
                 attention_ds: Sequence[int] = (8, 16, 32), head_channels: int = 32, dropout: float = 0.0) -> None:
        super().__init__()
        base = int(filters[0])
        self.base = base
        self.levels = len(filters)
        emb_dim = 4 * base
        self.time_embed = nn.Sequential(nn.Linear(base, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        self.input_conv = nn.Conv2d(in_channels, base, 3, padding=1)
        self.down = nn.ModuleList()
        self.downsample = nn.ModuleList()
        skips = [base]
        ch = base
        for level, width in enumerate(filters):
            ds = 2**level
            blocks = nn.ModuleList()
            for _ in range(res_blocks):
                blocks.append(_Stage(ch, width, emb_dim, ds in attention_ds, head_channels, dropout))
                ch = width
                skips.append(ch)
            self.down.append(blocks)
            if level < self.levels - 1:
                self.downsample.append(nn.Conv2d(ch, ch, 3, stride=2, padding=1))
                skips.append(ch)
        self.middle = nn.ModuleList([_Stage(ch, ch, emb_dim, True, head_channels, dropout),
                                     _Stage(ch, ch, emb_dim, False, head_channels, dropout)])
        self.up = nn.ModuleList()
        self.upsample = nn.ModuleList()
        for level in range(self.levels - 1, -1, -1):
            width, ds = int(filters[level]), 2**level
            blocks = nn.ModuleList()
            for _ in range(res_blocks + 1):
                blocks.append(_Stage(ch + skips.pop(), width, emb_dim, ds in attention_ds, head_channels, dropout))
                ch = width
            self.up.append(blocks)
            if level > 0:
                self.upsample.append(nn.Conv2d(ch, ch, 3, padding=1))
        self.out = nn.Sequential(group_norm(ch), nn.SiLU(), _zero(nn.Conv2d(ch, classes, 3, padding=1)))

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """x [B, L + C, H, W], t [B] (steps 1..T) -> probabilities [B, L, H, W]."""
        h_in, w_in = x.shape[-2:]
        multiple = 2 ** (self.levels - 1)
        pad_h, pad_w = (-h_in) % multiple, (-w_in) % multiple
        if pad_h or pad_w:
            x = F.pad(x, (0, pad_w, 0, pad_h))
        emb = self.time_embed(timestep_embedding(t, self.base))
        h = self.input_conv(x)
        skips = [h]
        for level, blocks in enumerate(self.down):
            for stage in cast(nn.ModuleList, blocks):
                h = stage(h, emb)
                skips.append(h)
            if level < self.levels - 1:
                h = self.downsample[level](h)
                skips.append(h)
        for stage in self.middle:
            h = stage(h, emb)
        for i, blocks in enumerate(self.up):
            for stage in cast(nn.ModuleList, blocks):
                h = stage(torch.cat([h, skips.pop()], 1), emb)
            if i < self.levels - 1:
                h = self.upsample[i](F.interpolate(h, scale_factor=2.0, mode="nearest"))
        probs = torch.softmax(self.out(h).float(), 1)
        return probs[..., :h_in, :w_in]
