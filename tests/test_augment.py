"""Joint augmentation: the same affine map for image and masks; masks stay binary; zero ranges = identity."""

from __future__ import annotations

import torch

from probseg_bench.data.augment import AffineAugmentation


def test_zero_ranges_are_the_identity():
    aug = AffineAugmentation(rotation=0, scale=(1.0, 1.0), translate=0, shear=0)
    x = torch.rand(3, 1, 16, 16)
    y = (torch.rand(3, 4, 16, 16) > 0.5).to(torch.uint8)
    wx, wy = aug(x, y, torch.Generator().manual_seed(0))
    torch.testing.assert_close(wx, x, atol=1e-5, rtol=0)
    assert torch.equal(wy, y)


def test_image_and_masks_get_the_same_map_and_masks_stay_binary():
    aug = AffineAugmentation()
    y = torch.zeros(4, 2, 32, 32, dtype=torch.uint8)
    y[:, :, 10:20, 8:24] = 1
    x = y[:, :1].float()  # the image is the first mask itself
    wx, wy = aug(x, y, torch.Generator().manual_seed(1))
    assert wy.dtype == torch.uint8 and set(wy.unique().tolist()) <= {0, 1}
    agree = ((wx[:, 0] > 0.5) == wy[:, 0].bool()).float().mean()
    assert agree > 0.97  # bilinear vs nearest differ only on the boundary
    assert not torch.equal(wy, y)  # something moved
    # both annotations of an image moved identically
    assert torch.equal(wy[:, 0], wy[:, 1])


def test_parameters_stay_in_the_paper_ranges():
    m = AffineAugmentation().matrices(2000, torch.Generator().manual_seed(0)).double()
    lin = m[:, :2, :2]
    det = torch.linalg.det(lin)  # = zoom^2 * (1 - shx * shy)
    assert det.min() > 0.8**2 * (1 - 0.09) - 1e-6 and det.max() < 1.2**2 * (1 + 0.09) + 1e-6
    assert m[:, :2, 2].abs().max() <= 0.2 + 1e-6  # 0.1 of the size = 0.2 in [-1, 1] coordinates
