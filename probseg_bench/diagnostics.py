"""Sample collapse: a model whose samples vary much less than its annotators disagree.

A latent-density model can reach a good-looking effective rank while its samples are all alike: the effective
rank only sees how evenly the prior's standard deviations are spread, not whether the decoder reacts to them
(issue 14: SPU-Net with the paper's Sinkhorn term on synthetic data, ER 5.9 with sample diversity 0.008 against
the annotators' 0.29). The check below compares the sample diversity (mean 1 - IoU over distinct pairs of the
16 samples of a test image, averaged over images) with the annotator diversity (the same over the annotations).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from probseg_bench.leaderboard import LeaderboardRow

COLLAPSE_RATIO = 0.25
"""A model is flagged when its sample diversity is below this fraction of the annotator diversity."""

MIN_ANNOTATOR_DIVERSITY = 0.02
"""Below this annotator diversity the annotators (nearly) agree and no spread is expected: never flagged."""


def collapse_warning(label: str, sample_diversity: float, annotator_diversity: float) -> str | None:
    """One line naming ``label`` and both diversities when the samples have collapsed, else None.

    Args:
        label: the model (and its configuration) as shown to the user.
        sample_diversity: mean sample diversity over the test images, in [0, 1].
        annotator_diversity: mean annotator diversity over the same images, in [0, 1].

    Returns None when either value is not finite (e.g. a record written before the metric existed) or when the
    annotators agree (annotator diversity < ``MIN_ANNOTATOR_DIVERSITY``).
    """
    if not (math.isfinite(sample_diversity) and math.isfinite(annotator_diversity)):
        return None
    if annotator_diversity < MIN_ANNOTATOR_DIVERSITY or sample_diversity >= COLLAPSE_RATIO * annotator_diversity:
        return None
    ratio = sample_diversity / annotator_diversity
    return (f"warning: {label}: sample diversity {sample_diversity:.3f} is {ratio:.2f}x the annotator diversity "
            f"{annotator_diversity:.3f} (below {COLLAPSE_RATIO}x): its samples barely vary, so its GED/EWD/ER "
            "describe a nearly deterministic model (see the documentation, docs/studies/spunet-collapse.md)")


def collapse_warnings(rows: Sequence[LeaderboardRow]) -> list[tuple[LeaderboardRow, str]]:
    """(row, :func:`collapse_warning` line) for each leaderboard row whose samples collapsed, the row named by its
    label, dataset, latent dimension and preset (what ``leaderboard`` prints on stderr and its HTML page under the
    row's table)."""
    found = []
    for row in rows:
        label = f"{row.label} on {row.dataset_label}, d={row.latent_dim}, {row.preset}"
        warning = collapse_warning(label, row.mean["sample_diversity"], row.mean["annotator_diversity"])
        if warning is not None:
            found.append((row, warning))
    return found
