"""A deep ensemble of M deterministic U-Nets (Lakshminarayanan et al. 2017), the ensemble baseline of the
ambiguous-segmentation papers: member m is the suite's U-Net with its own 1x1 head, initialised from its own seed
and trained on its own uniformly drawn annotation per image and step. The members are held in one module and
trained jointly (their losses add, so each member's gradient is that of its own training; Adam's update is
per parameter). A "sample" is one member's prediction: sample i is member i mod M, so more samples than members
cycle through them. No latent prior (``latent_dim = 0``).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from probseg_bench.api import TrainOutput
from probseg_bench.errors import ProbsegError
from probseg_bench.nn import UNet, parse_filters
from probseg_bench.nn.unet import init_weights


class UNetEnsemble(nn.Module):
    """M U-Nets; ``member_logits(x)`` -> [B, M, 1, H, W]; ``sample(x, n)[:, i]`` = member ``i % M``.

    Args:
        latent_dim: ignored (the CLI's --latent-dim): ``self.latent_dim = 0``.
        members: M (default 4).
        filters, convs_per_block: each member's U-Net.
    """

    def __init__(self, latent_dim: int = 0, in_channels: int = 1, members: int = 4,
                 filters: str = "32,64,128,192", convs_per_block: int = 3, **_: object) -> None:
        super().__init__()
        if int(members) < 1:
            raise ProbsegError(f"members: expected an integer >= 1, got {members}")
        f = parse_filters(filters)
        self.latent_dim = 0
        self.members = int(members)
        # one seed per member, drawn from torch's generator (the run's seed), each member initialised from its own
        seeds = torch.randint(2**31 - 1, (self.members,)).tolist()
        self.unets = nn.ModuleList()
        self.heads = nn.ModuleList()
        for seed in seeds:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(int(seed))
                unet, head = UNet(in_channels, f, convs_per_block), nn.Conv2d(f[0], 1, 1)
                init_weights(unet)
                init_weights(head)
            self.unets.append(unet)
            self.heads.append(head)

    def member_logits(self, image: torch.Tensor) -> torch.Tensor:
        """image [B, C, H, W] -> every member's logits [B, M, 1, H, W]."""
        return torch.stack([head(unet(image)) for unet, head in zip(self.unets, self.heads, strict=True)], 1)

    def sample(self, image: torch.Tensor, n: int) -> torch.Tensor:
        """n samples: sample i is member i mod M -> [B, n, 1, H, W]."""
        logits = self.member_logits(image)
        return logits[:, [i % self.members for i in range(n)]]

    def prior(self, image: torch.Tensor) -> None:
        """No latent prior (``latent_dim = 0``)."""
        return None

    def decode(self, image: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError("a U-Net ensemble has no latent space to decode")

    def forward(self, image: torch.Tensor, masks: torch.Tensor) -> TrainOutput:
        """Each member reconstructs its own random annotation per image; ``reconstruction`` = the sum over members
        of their BCE summed over pixels [B]; ``logits``/``target``/``annotation_index``: member 0's."""
        b, a = masks.shape[:2]
        k = torch.randint(a, (b, self.members), device=masks.device)  # [B, M]
        y = torch.gather(masks, 1, k[:, :, None, None].expand(-1, -1, *masks.shape[2:])).to(torch.float32)
        logits = self.member_logits(image)[:, :, 0]  # [B, M, H, W]
        bce = F.binary_cross_entropy_with_logits(logits, y, reduction="none").flatten(1).sum(1)
        return TrainOutput(
            logits=logits[:, :1], target=y[:, :1], prior=None, posterior=None, posterior_samples=None,
            prior_samples=None, annotation_index=k[:, 0], reconstruction=bce,
        )
