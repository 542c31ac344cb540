"""Joint random affine augmentation of an image batch and all its masks, on the tensors' device.

The seed paper (Section III-D): rotation in [-180, 180] degrees, scaling in [0.8, 1.2], translation of 0.1 of
the image size and shear "of 30%" in all directions. We read the shear as a shear factor (tangent of the shear
angle) drawn uniformly in [-0.3, 0.3] for each axis (about +-16.7 degrees).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch.nn import functional as F


@dataclass(frozen=True)
class AffineAugmentation:
    """One random affine map per image, applied to the image (bilinear, border padding) and to every mask of
    that image (nearest neighbour, zero padding) with the same sampling grid, in one batched call.

    Attributes:
        rotation: maximal |angle| in degrees.
        scale: (min, max) zoom factor.
        translate: maximal |shift| as a fraction of the image size, per axis.
        shear: maximal |shear factor| per axis.
    """

    rotation: float = 180.0
    scale: tuple[float, float] = (0.8, 1.2)
    translate: float = 0.1
    shear: float = 0.3

    def matrices(self, b: int, generator: torch.Generator) -> torch.Tensor:
        """Forward affine maps in normalised coordinates [-1, 1]: float32 [b, 3, 3] (CPU)."""
        u = torch.rand(b, 6, generator=generator, dtype=torch.float64)
        angle = (2 * u[:, 0] - 1) * math.radians(self.rotation)
        zoom = self.scale[0] + (self.scale[1] - self.scale[0]) * u[:, 1]
        shx, shy = (2 * u[:, 2] - 1) * self.shear, (2 * u[:, 3] - 1) * self.shear
        tx, ty = (2 * u[:, 4] - 1) * 2 * self.translate, (2 * u[:, 5] - 1) * 2 * self.translate
        eye = torch.eye(3, dtype=torch.float64).repeat(b, 1, 1)
        rot, shr, scl = eye.clone(), eye.clone(), eye.clone()
        rot[:, 0, 0], rot[:, 0, 1], rot[:, 1, 0], rot[:, 1, 1] = angle.cos(), -angle.sin(), angle.sin(), angle.cos()
        shr[:, 0, 1], shr[:, 1, 0] = shx, shy
        scl[:, 0, 0], scl[:, 1, 1] = zoom, zoom
        out = rot @ shr @ scl
        out[:, 0, 2], out[:, 1, 2] = tx, ty
        return out.float()

    def __call__(
        self, images: torch.Tensor, masks: torch.Tensor, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """images float [B, C, H, W], masks [B, A, H, W] (any dtype) -> the warped pair (masks keep their
        dtype and stay binary)."""
        b = images.shape[0]
        inverse = torch.linalg.inv(self.matrices(b, generator))[:, :2].to(images.device)
        grid = F.affine_grid(inverse, list(images.shape), align_corners=False)
        warped_images = F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)
        warped_masks = F.grid_sample(
            masks.to(images.dtype), grid, mode="nearest", padding_mode="zeros", align_corners=False
        )
        return warped_images, warped_masks.to(masks.dtype)
