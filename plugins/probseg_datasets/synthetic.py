"""The ``synthetic`` dataset: images whose distribution over plausible masks is KNOWN exactly.

Generative model (all geometry in unit coordinates, the image spanning [0, 1] x [0, 1], pixel centres at
``(i + 0.5) / size``). Image ``i`` draws, from its own random stream ``numpy.random.default_rng([seed, i, 0])``:

* a **base disk** (always annotated), centre 0.5 +- 0.04, whose radius is one of K = ``levels`` discrete
  levels ``R_k = R0 + (k - (K - 1) / 2) * delta`` (R0 uniform in [0.12, 0.16], ``delta = max(0.02, 1.2 / size)``,
  so neighbouring levels are at least 1.2 pixels apart and always give different masks) with probabilities
  ``q = 0.5 / K + 0.5 * Dirichlet(3, ..., 3)`` (every level at least half its uniform share);
* r = ``structures`` **ambiguous blobs**: ellipses (semi-axes rb and 0.7..1 rb, rb in [0.045, 0.06], random
  orientation) placed on a ring around the disk, one per angular sector (random offset, jitter +-20% of the
  sector) at a distance leaving a gap of at least 0.03 to the largest disk level and between blobs, each with
  its own presence probability ``p_j`` uniform in [0.2, 0.8].

One annotation = one independent draw of (radius level ~ q, presence of blob j ~ Bernoulli(p_j) for each j):
the mask is the disk at that level united with the present blobs. The true per-image distribution is the
finite set of the K * 2^r masks with probabilities ``q_k * prod_j p_j^b_j (1 - p_j)^(1 - b_j)``
(:func:`true_distribution`). Annotations come from the stream ``[seed, i, 1]``, one row of 1 + r uniforms
per annotator, so annotator a of image i is the same whatever the number of annotators.

Change from the suggested model (blobs at free random positions): there blobs may overlap the disk or each
other, so a blob hidden inside the disk changes no mask and distinct configurations coincide; the true
support would then be smaller than K * 2^r and the intrinsic dimension overstated. Here blobs never overlap the
disk or each other and every blob covers at least one pixel (minor semi-axis >= 1 pixel for ``size >= 32``),
so all K * 2^r configurations are distinct masks (duplicates would still be merged).

The image (stream ``[seed, i, 2]`` for the noise): background 0.1; the disk at 0.8 with a logistic edge
centred at the mean radius level and of width (R_max - R_min) / 4 (at least half a pixel), so the image shows
exactly the boundary ambiguity the annotators resolve; every blob at +0.35 (fainter than the disk, present in
the image whether annotated or not); Gaussian noise sigma 0.06; clipped to [0, 1]; float32 [N, 1, H, W].
Groups: 4 consecutive images form one "patient" (``p0000``, ...), so grouped splitting is exercised.
Image geometry, annotations and noise of image i do not depend on ``n_images`` or ``annotators``.

**Intrinsic dimension** (:func:`intrinsic_dimension`): the number of independent factors of variation of the
annotations, r + (1 if K > 1): compare it to a model's effective rank.

**Oracle floor** (:func:`oracle_metrics`): GED and HM-IoU between n samples of the TRUE distribution and the
image's A annotations, the best any model can do on this data under the protocol. The oracle's squared GED
(V-statistic, :mod:`probseg_bench.metrics`) is not 0: its expectation is exactly ``D * (1 / n + 1 / A)`` with
``D = sum_ab q_a q_b (1 - IoU(m_a, m_b))`` over the support, because the V-statistic's within-set means include
the zero diagonal (:func:`expected_distance`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from probseg_bench.api import DatasetSpec, HyperParameter, KnownDistribution, MultiRaterData, ProtocolDefaults
from probseg_bench.data.intensity import model_intensities
from probseg_bench.errors import ProbsegError
from probseg_bench.memory import check_fits

__all__ = [
    "GROUP_SIZE",
    "SPECS",
    "SYNTHETIC",
    "expected_distance",
    "generate_image",
    "intrinsic_dimension",
    "load_synthetic",
    "oracle_metrics",
    "true_distribution",
]

GROUP_SIZE = 4
"""Consecutive images per patient group."""
MIN_SIZE = 32
MAX_SIZE = 4096
MAX_STRUCTURES = 6
MAX_LEVELS = 4

_BACKGROUND, _DISK, _BLOB, _NOISE = 0.1, 0.8, 0.35, 0.06
_GAP = 0.03  # unit-coordinate gap between the largest disk level and the blobs
_RB = (0.045, 0.06)  # blob major semi-axis range
_ASPECT = (0.7, 1.0)  # minor / major semi-axis
_PRESENCE = (0.2, 0.8)
_JITTER = 0.2  # angular jitter, fraction of a sector


@dataclass(frozen=True)
class _Geometry:
    """Continuous parameters of one image (unit coordinates)."""

    centre: np.ndarray  # [2] (y, x)
    radii: np.ndarray  # [K]
    level_probs: np.ndarray  # [K]
    blob_centres: np.ndarray  # [r, 2]
    blob_axes: np.ndarray  # [r, 2] (major, minor semi-axes)
    blob_angles: np.ndarray  # [r] radians
    presence_probs: np.ndarray  # [r]


def _check_int(name: str, value: Any, low: int, high: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ProbsegError(f"dataset 'synthetic': parameter {name} must be an integer, got {value!r}")
    if value < low or (high is not None and value > high):
        bound = f">= {low}" if high is None else f"in {low}..{high}"
        raise ProbsegError(f"dataset 'synthetic': parameter {name} must be {bound}, got {value}")
    return int(value)


def _check_params(n_images: Any, size: Any, annotators: Any, structures: Any, levels: Any,
                  seed: Any) -> tuple[int, int, int, int, int, int]:
    return (
        _check_int("n_images", n_images, 1),
        _check_int("size", size, MIN_SIZE, MAX_SIZE),
        _check_int("annotators", annotators, 1),
        _check_int("structures", structures, 0, MAX_STRUCTURES),
        _check_int("levels", levels, 1, MAX_LEVELS),
        _check_int("seed", seed, 0),
    )


def _geometry(index: int, seed: int, size: int, structures: int, levels: int) -> _Geometry:
    rng = np.random.default_rng([seed, index, 0])
    centre = 0.5 + rng.uniform(-0.04, 0.04, 2)
    r0 = rng.uniform(0.12, 0.16)
    delta = max(0.02, 1.2 / size)
    radii = r0 + (np.arange(levels) - (levels - 1) / 2) * delta
    level_probs = 0.5 / levels + 0.5 * rng.dirichlet(np.full(levels, 3.0))
    r = structures
    sector = 2 * math.pi / max(r, 1)
    phi0 = rng.uniform(0, 2 * math.pi)
    angles = phi0 + sector * np.arange(r) + rng.uniform(-_JITTER, _JITTER, r) * sector
    rho_base = radii.max() + _GAP + _RB[1]
    rho = rho_base + rng.uniform(0.0, 0.04, r)
    # adjacent blob centres are >= 2 rho_base sin((1 - 2 jitter) sector / 2) apart; keep a gap of 0.01 there
    cap = rho_base * math.sin((1 - 2 * _JITTER) * sector / 2) - 0.005 if r > 1 else _RB[1]
    major = np.minimum(rng.uniform(*_RB, r), cap)
    minor = major * rng.uniform(*_ASPECT, r)
    blob_centres = centre + np.stack([rho * np.sin(angles), rho * np.cos(angles)], axis=1)
    return _Geometry(
        centre=centre, radii=radii, level_probs=level_probs / level_probs.sum(), blob_centres=blob_centres,
        blob_axes=np.stack([major, minor], axis=1), blob_angles=rng.uniform(0, math.pi, r),
        presence_probs=rng.uniform(*_PRESENCE, r),
    )


def _rasterise(g: _Geometry, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(distance to the disk centre float64 [S, S], disk levels bool [K, S, S], blobs bool [r, S, S])."""
    coords = (np.arange(size) + 0.5) / size
    dy = coords[:, None] - g.centre[0]
    dx = coords[None, :] - g.centre[1]
    dist = np.sqrt(dy * dy + dx * dx)
    disks = dist[None] <= g.radii[:, None, None]
    by = coords[None, :, None] - g.blob_centres[:, 0, None, None]  # [r, S, 1]
    bx = coords[None, None, :] - g.blob_centres[:, 1, None, None]  # [r, 1, S]
    cos, sin = np.cos(g.blob_angles)[:, None, None], np.sin(g.blob_angles)[:, None, None]
    u = (by * cos + bx * sin) / g.blob_axes[:, 0, None, None]
    v = (bx * cos - by * sin) / g.blob_axes[:, 1, None, None]
    blobs = u * u + v * v <= 1.0
    return dist, disks, blobs


def _annotate(g: _Geometry, index: int, seed: int, annotators: int) -> tuple[np.ndarray, np.ndarray]:
    """(radius level int64 [A], blob presence bool [A, r]) of the annotators of one image."""
    draws = np.random.default_rng([seed, index, 1]).random((annotators, 1 + len(g.presence_probs)))
    cdf = np.cumsum(g.level_probs)
    levels = np.minimum(np.searchsorted(cdf, draws[:, 0], side="right"), len(cdf) - 1)
    return levels.astype(np.int64), draws[:, 1:] < g.presence_probs


def _compose(disks: np.ndarray, blobs: np.ndarray, levels: np.ndarray, presence: np.ndarray) -> np.ndarray:
    """Masks bool [M, S, S]: disk at ``levels[m]`` united with the blobs where ``presence[m]``."""
    out = disks[levels].copy()
    for j in range(blobs.shape[0]):
        out |= presence[:, j, None, None] & blobs[j]
    return out


def _render(g: _Geometry, dist: np.ndarray, blobs: np.ndarray, index: int, seed: int) -> np.ndarray:
    size = dist.shape[0]
    width = max((g.radii.max() - g.radii.min()) / 4, 0.5 / size)
    edge = np.clip((g.radii.mean() - dist) / width, -50, 50)
    image = _BACKGROUND + _DISK / (1 + np.exp(-edge)) + _BLOB * blobs.sum(0)
    image += np.random.default_rng([seed, index, 2]).normal(0.0, _NOISE, image.shape)
    return np.clip(image, 0.0, 1.0).astype(np.float32)


def generate_image(index: int, n_images: int = 240, size: int = 128, annotators: int = 4, structures: int = 3,
                   levels: int = 3, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Image ``index`` of the dataset and its annotations, without generating the others.

    Returns:
        image float32 [size, size] in [0, 1]; masks uint8 {0, 1} [annotators, size, size].

    Raises:
        ProbsegError: a parameter out of range (see :func:`load_synthetic`) or ``index`` not in 0..n_images-1.
    """
    n_images, size, annotators, structures, levels, seed = _check_params(
        n_images, size, annotators, structures, levels, seed)
    index = _check_int("index", index, 0, n_images - 1)
    g = _geometry(index, seed, size, structures, levels)
    dist, disks, blobs = _rasterise(g, size)
    masks = _compose(disks, blobs, *_annotate(g, index, seed, annotators))
    return _render(g, dist, blobs, index, seed), masks.astype(np.uint8)


def load_synthetic(data_root: Path | str | None = None, n_images: int = 240, size: int = 128, annotators: int = 4,
                   structures: int = 3, levels: int = 3, seed: int = 0) -> MultiRaterData:
    """Generate the synthetic dataset (model in the module docstring); deterministic for the parameters.

    Args:
        data_root: must be None (the data is generated).
        n_images: N >= 1.
        size: height = width in pixels, 32..4096.
        annotators: A >= 1 annotations per image.
        structures: r ambiguous blobs per image, 0..6.
        levels: K radius levels of the base disk, 1..4 (1 = no boundary ambiguity).
        seed: >= 0.

    Returns:
        images float32 [N, 1, size, size] in [0, 1], masks uint8 {0, 1} [N, A, size, size], groups str [N]
        (``p0000`` for images 0..3, ...), metadata ``case`` str [N] (``img00000``, ...) and ``index`` int64 [N].

    Raises:
        ProbsegError: a ``data_root`` was given, a parameter is not an integer in its range, or the images and
            masks (4 + A bytes per pixel) would not fit in this machine's memory.
    """
    if data_root is not None:
        raise ProbsegError(
            f"dataset 'synthetic' is generated from its parameters (seeded) and takes no --data-root, got "
            f"{str(data_root)!r}; set it with --dataset-param, e.g. n_images=240 size=128 annotators=4"
        )
    n_images, size, annotators, structures, levels, seed = _check_params(
        n_images, size, annotators, structures, levels, seed)
    # float32 images and uint8 masks, refused before anything is allocated when they cannot fit
    check_fits(n_images * size * size * (4 + annotators),
               f"dataset 'synthetic': --dataset-param n_images={n_images} (with size={size}, annotators={annotators})")
    images = np.empty((n_images, 1, size, size), dtype=np.float32)
    masks = np.empty((n_images, annotators, size, size), dtype=np.uint8)
    for i in range(n_images):
        g = _geometry(i, seed, size, structures, levels)
        dist, disks, blobs = _rasterise(g, size)
        masks[i] = _compose(disks, blobs, *_annotate(g, i, seed, annotators))
        images[i, 0] = model_intensities(_render(g, dist, blobs, i, seed))  # float32 in [0, 1]: kept as is
    index = np.arange(n_images, dtype=np.int64)
    return MultiRaterData(
        images=images, masks=masks, groups=np.array([f"p{i // GROUP_SIZE:04d}" for i in index]),
        metadata={"case": np.array([f"img{i:05d}" for i in index]), "index": index},
    )


def _support(g: _Geometry, disks: np.ndarray, blobs: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(distinct masks bool [M, S, S] most probable first, probabilities float64 [M], support index int64 [K * 2^r]
    of each configuration ``level * 2^r + sum_j presence_j 2^j``)."""
    r, k = blobs.shape[0], disks.shape[0]
    bits = ((np.arange(2**r)[:, None] >> np.arange(r)[None, :]) & 1).astype(bool)  # [2^r, r]
    levels = np.repeat(np.arange(k), 2**r)
    presence = np.tile(bits, (k, 1))
    p = g.presence_probs
    probs = g.level_probs[levels] * np.prod(np.where(presence, p, 1.0 - p), axis=1)
    masks = _compose(disks, blobs, levels, presence)
    seen: dict[bytes, int] = {}
    inverse = np.array([seen.setdefault(np.packbits(m).tobytes(), len(seen)) for m in masks], dtype=np.int64)
    _, first = np.unique(inverse, return_index=True)  # first configuration of each distinct mask
    merged = np.bincount(inverse, weights=probs, minlength=first.size)
    order = np.lexsort((np.arange(first.size), -merged))  # most probable first; ties in configuration order
    rank = np.empty_like(order)
    rank[order] = np.arange(order.size)
    return masks[first[order]], merged[order] / merged.sum(), rank[inverse]


def true_distribution(index: int, n_images: int = 240, size: int = 128, annotators: int = 4, structures: int = 3,
                      levels: int = 3, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The exact distribution of the annotations of image ``index`` (regenerated alone, deterministically).

    ``n_images`` and ``annotators`` only check ``index``; the distribution does not depend on them.

    Returns:
        masks bool [M, size, size], the distinct plausible masks (M = levels * 2^structures: configurations
        never coincide, duplicates would be merged), most probable first; probabilities float64 [M], > 0,
        summing to 1.

    Raises:
        ProbsegError: a parameter out of range or ``index`` not in 0..n_images-1.
    """
    n_images, size, annotators, structures, levels, seed = _check_params(
        n_images, size, annotators, structures, levels, seed)
    index = _check_int("index", index, 0, n_images - 1)
    g = _geometry(index, seed, size, structures, levels)
    _, disks, blobs = _rasterise(g, size)
    masks, probabilities, _ = _support(g, disks, blobs)
    return masks, probabilities


def intrinsic_dimension(structures: int = 3, levels: int = 3, **_: Any) -> int:
    """Independent factors of variation of the annotations: r blob presences + 1 boundary level if K > 1.

    Compare with a model's effective rank (seed paper Eq. 17). Other dataset parameters (size, n_images, ...) are
    accepted and do not change it. Raises ProbsegError for out-of-range values.
    """
    structures = _check_int("structures", structures, 0, MAX_STRUCTURES)
    levels = _check_int("levels", levels, 1, MAX_LEVELS)
    return structures + (1 if levels > 1 else 0)


def expected_distance(masks: np.ndarray, probabilities: np.ndarray) -> float:
    """D = E[1 - IoU(a, b)] for a, b drawn independently from a finite mask distribution (DESIGN.md IoU rules).

    Args:
        masks: bool or {0, 1} [M, H, W]; probabilities: float [M] summing to 1.

    Returns:
        D in [0, 1]. The expected squared GED (V-statistic) between n and m independent draws of the
        distribution is ``D * (1 / n + 1 / m)``: E[2 mean d(s, y)] = 2 D and E[mean_ii' d(s_i, s_i')] =
        (1 - 1 / n) D.
    """
    from probseg_bench.metrics import iou_matrix

    p = np.asarray(probabilities, dtype=np.float64)
    iou = iou_matrix(np.asarray(masks), np.asarray(masks))
    return float(p @ (1.0 - iou) @ p)


def oracle_metrics(n_samples: int = 16, indices: Sequence[int] | None = None, **params: Any) -> dict[str, float]:
    """The best any model can do on the synthetic data: metrics of samples from the TRUE distribution.

    For every image (or ``indices``, e.g. a run's test images), ``n_samples`` masks are drawn from
    :func:`true_distribution` (``default_rng([seed, i, 3]).choice(M, n_samples, p=probabilities)``) and compared
    with the image's annotations (those of :func:`load_synthetic`) by the GED and HM-IoU of
    :mod:`probseg_bench.metrics` (``ged_from_iou`` / ``hm_iou_from_iou`` on the IoU matrix of the support: the
    samples and annotations are support masks, so this equals ``generalized_energy_distance`` and
    ``hungarian_matched_iou`` on the masks, computed once per image).

    Args:
        n_samples: samples per image (the protocol evaluates 16).
        indices: image indices; None = all ``n_images``.
        **params: the dataset parameters of :func:`load_synthetic` (n_images, size, annotators, structures,
            levels, seed).

    Returns:
        ``ged``, ``hm_iou``, ``ewd`` (= 1 - hm_iou): means over the images; ``ged_expected``: the exact
        expectation of ``ged``, mean of ``D_i * (1 / n_samples + 1 / annotators)``; ``diversity``: the mean of
        ``D_i``, the exact expected 1 - IoU between two independent draws (what a model's sample diversity and the
        annotator diversity estimate); ``n_images``, ``n_samples``.

    Raises:
        ProbsegError: unknown parameter names, out-of-range values, ``n_samples`` < 1.
    """
    import torch

    from probseg_bench.metrics import ged_from_iou, hm_iou_from_iou, iou_matrix

    known = {"n_images", "size", "annotators", "structures", "levels", "seed"}
    unknown = sorted(set(params) - known)
    if unknown:
        raise ProbsegError(f"oracle_metrics: unknown parameter '{unknown[0]}'; expected some of {sorted(known)}")
    settings = {"n_images": 240, "size": 128, "annotators": 4, "structures": 3, "levels": 3, "seed": 0, **params}
    n_images, size, annotators, structures, levels, seed = _check_params(**settings)
    n_samples = _check_int("n_samples", n_samples, 1)
    chosen = range(n_images) if indices is None else [_check_int("index", i, 0, n_images - 1) for i in indices]
    ged, hm, expected, diversity = [], [], [], []
    for i in chosen:
        g = _geometry(i, seed, size, structures, levels)
        _, disks, blobs = _rasterise(g, size)
        support, probs, config_index = _support(g, disks, blobs)
        # samples and annotations are support masks: one IoU matrix of the support gives every pair exactly
        iou = iou_matrix(support, support)
        ann_levels, presence = _annotate(g, i, seed, annotators)
        ann = config_index[ann_levels * 2**structures + presence @ (1 << np.arange(structures))]
        draw = np.random.default_rng([seed, i, 3]).choice(len(probs), size=n_samples, p=probs)
        iou_sy = iou[np.ix_(draw, ann)]
        ged.append(float(ged_from_iou(torch.from_numpy(iou_sy), torch.from_numpy(iou[np.ix_(draw, draw)]),
                                      torch.from_numpy(iou[np.ix_(ann, ann)]))))
        hm.append(hm_iou_from_iou(iou_sy))
        diversity.append(float(probs @ (1.0 - iou) @ probs))
        expected.append(diversity[-1] * (1.0 / n_samples + 1.0 / annotators))
    if not ged:
        raise ProbsegError("oracle_metrics: indices is empty")
    hm_iou = float(np.mean(hm))
    return {"ged": float(np.mean(ged)), "hm_iou": hm_iou, "ewd": 1.0 - hm_iou,
            "ged_expected": float(np.mean(expected)), "diversity": float(np.mean(diversity)),
            "n_images": float(len(ged)), "n_samples": float(n_samples)}


SYNTHETIC = DatasetSpec(
    name="synthetic",
    description="generated disks + ambiguous blobs with a KNOWN distribution over masks (seeded, any size)",
    load=load_synthetic,
    license="generated data (no licence needed)",
    citation="probseg-bench synthetic data",
    protocol=ProtocolDefaults(epochs=200, warmup_epochs=5),
    parameters=(
        HyperParameter("n_images", 240, "number of images N", low=40, high=4000, tunable=False, minimum=1),
        HyperParameter("size", 128, "height = width in pixels (>= 32)", low=32, high=256, tunable=False,
                       minimum=MIN_SIZE, maximum=MAX_SIZE),
        HyperParameter("annotators", 4, "annotations per image A", low=1, high=16, tunable=False, minimum=1),
        HyperParameter("structures", 3, "ambiguous blobs per image r (0..6)", low=0, high=6, tunable=False,
                       minimum=0, maximum=MAX_STRUCTURES),
        HyperParameter("levels", 3, "radius levels K of the base disk (1 = sharp boundary; 1..4)", low=1, high=4,
                       tunable=False, minimum=1, maximum=MAX_LEVELS),
        HyperParameter("seed", 0, "generator seed", low=0, high=2**31 - 1, tunable=False, minimum=0),
    ),
    layout="generated: no --data-root; set the parameters with --dataset-param NAME=VALUE",
    known_distribution=KnownDistribution(
        true_distribution=true_distribution, oracle_metrics=oracle_metrics, intrinsic_dimension=intrinsic_dimension,
        # probseg-bench validate: 64 x 64, 160 images (40 patients), 4 annotators, 3 blobs x 3 radius levels
        validation_params={"size": 64, "n_images": 160, "annotators": 4, "structures": 3, "levels": 3},
    ),
)

SPECS: tuple[DatasetSpec, ...] = (SYNTHETIC,)
