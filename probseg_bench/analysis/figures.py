"""The seed paper's Figures 3-8 drawn with matplotlib (Agg backend; no display needed). Each function returns a
Figure; :func:`save` writes it as PNG and PDF."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np


def save(fig: Any, folder: Path, stem: str) -> list[Path]:
    """Write ``stem.png`` (150 dpi) and ``stem.pdf``; close the figure."""
    paths = [folder / f"{stem}.png", folder / f"{stem}.pdf"]
    fig.savefig(paths[0], dpi=150, bbox_inches="tight")
    fig.savefig(paths[1], bbox_inches="tight")
    plt.close(fig)
    return paths


def _image(ax: Any, data: np.ndarray, title: str, cmap: str = "gray", vmin: float = 0.0, vmax: float = 1.0,
           colorbar: bool = True) -> None:
    im = ax.imshow(data, cmap=cmap, vmin=vmin, vmax=vmax)
    ax.set_title(title, fontsize=8)
    ax.set_xticks([])
    ax.set_yticks([])
    if colorbar:
        bar = plt.colorbar(im, ax=ax, fraction=0.046, pad=0.02, ticks=[vmin, (vmin + vmax) / 2, vmax])
        bar.ax.tick_params(labelsize=6)


def samples_figure(images: np.ndarray, masks: np.ndarray, pred_mean: np.ndarray, pred_std: np.ndarray,
                   labels: list[str], title: str) -> Any:
    """Fig. 3: per row one test image, its annotations, annotator mean and std, predicted mean and std.

    Args:
        images: [R, H, W]; masks: [R, A, H, W]; pred_mean, pred_std: [R, H, W] over the binary samples.
        labels: [R] the row's name, left of it (e.g. ``analyze.label_test_image``: "test image 3 of 9" and the
            case); a newline splits it into lines.
    """
    rows, a = masks.shape[:2]
    fig, axes = plt.subplots(rows, a + 5, figsize=(2.1 * (a + 5), 2.0 * rows), squeeze=False)
    for r in range(rows):
        _image(axes[r, 0], images[r], "image (intensity)", colorbar=True)
        axes[r, 0].set_ylabel(labels[r], fontsize=8)
        for j in range(a):
            _image(axes[r, 1 + j], masks[r, j], f"annotator {j + 1}", colorbar=False)
        ann = masks[r].astype(np.float64)
        _image(axes[r, a + 1], ann.mean(0), "annotator mean (fraction)", cmap="viridis")
        _image(axes[r, a + 2], ann.std(0), "annotator std", cmap="magma", vmax=0.5)
        _image(axes[r, a + 3], pred_mean[r], "sample mean (fraction)", cmap="viridis")
        _image(axes[r, a + 4], pred_std[r], "sample std", cmap="magma", vmax=0.5)
    fig.suptitle(title)
    return fig


def prior_figure(mean: np.ndarray, std: np.ndarray, title: str) -> Any:
    """Fig. 4: the prior mean and standard deviation per latent dimension across test images (box plots)."""
    d = mean.shape[1]
    fig, (a0, a1) = plt.subplots(1, 2, figsize=(max(6, 1.2 * d + 3), 3.2))
    a0.boxplot([mean[:, i] for i in range(d)])
    a0.set_xlabel("latent dimension")
    a0.set_ylabel("prior mean μ (latent units)")
    a0.set_title("prior means across test images", fontsize=9)
    a1.boxplot([std[:, i] for i in range(d)])
    a1.set_yscale("log")
    a1.set_xlabel("latent dimension")
    a1.set_ylabel("prior std σ (latent units, log scale)")
    a1.set_title("prior standard deviations", fontsize=9)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def traversal_figure(probabilities: np.ndarray, offsets: np.ndarray, title: str) -> Any:
    """Fig. 5: rows latent axes, columns offsets in prior std; decoded foreground probability."""
    d, steps = probabilities.shape[:2]
    fig, axes = plt.subplots(d, steps, figsize=(1.7 * steps + 1, 1.7 * d), squeeze=False)
    for i in range(d):
        for k in range(steps):
            im = axes[i, k].imshow(probabilities[i, k], cmap="viridis", vmin=0, vmax=1)
            axes[i, k].set_xticks([])
            axes[i, k].set_yticks([])
            if i == 0:
                axes[i, k].set_title(f"{offsets[k]:+.1f} σ", fontsize=8)
            if k == 0:
                axes[i, k].set_ylabel(f"z{i + 1}", fontsize=8)
    fig.colorbar(im, ax=axes, fraction=0.02, pad=0.02, label="foreground probability")
    fig.suptitle(title)
    return fig


def freezing_figure(ewd: np.ndarray, order: np.ndarray, variances: np.ndarray, title: str) -> Any:
    """Fig. 6: test EWD against the number of latent dimensions frozen to the prior mean (lowest variance first)."""
    fig, ax = plt.subplots(figsize=(5.5, 3.4))
    ax.plot(np.arange(len(ewd)), ewd, marker="o")
    ax.set_xlabel("latent dimensions frozen to the prior mean (lowest variance first)")
    ax.set_ylabel("test EWD (1 - HM-IoU)")
    ax.set_xticks(np.arange(len(ewd)))
    labels = ["none"] + [f"+z{int(i) + 1}\n({variances[int(i)]:.2g})" for i in order]
    ax.set_xticklabels(labels, fontsize=7)
    ax.grid(alpha=0.3)
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return fig


def effective_rank_figure(epochs: np.ndarray, ranks: np.ndarray, d: int, best_epoch: int, title: str) -> Any:
    """Fig. 7: the prior's effective rank on the validation images per training epoch."""
    fig, ax = plt.subplots(figsize=(5.5, 3.4))
    ax.plot(epochs, ranks, marker=".")
    ax.axvline(best_epoch, color="grey", linestyle="--", label=f"selected checkpoint (epoch {best_epoch})")
    ax.set_ylim(1, d + 0.1)
    ax.set_xlabel("epoch")
    ax.set_ylabel("effective rank of the prior σ (1 to d)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return fig


def entropy_figure(annotator: np.ndarray, predicted: np.ndarray, pearson: float, spearman: float,
                   title: str) -> Any:
    """Fig. 8: annotator pixel entropy against predicted pixel entropy (all test pixels, 2-D histogram)."""
    fig, ax = plt.subplots(figsize=(4.8, 4.0))
    h = ax.hist2d(annotator.ravel(), predicted.ravel(), bins=40, range=[[0, np.log(2)], [0, np.log(2)]],
                  cmap="viridis", norm=matplotlib.colors.LogNorm())
    fig.colorbar(h[3], ax=ax, label="pixels")
    # dashed black on every background: white on the empty bins, dark on the sparse ones, yellow on the dense
    ax.plot([0, np.log(2)], [0, np.log(2)], color="black", linestyle="--", linewidth=1.0,
            label="identity (predicted = annotator entropy)")
    ax.legend(loc="upper left", fontsize=7)
    ax.set_xlabel("annotator entropy H(ȳ) (nats)")
    ax.set_ylabel("predicted entropy H(p̄) (nats)")
    ax.set_title(f"{title}\nper-image mean Pearson {pearson:.3f}, Spearman {spearman:.3f}", fontsize=9)
    fig.tight_layout()
    return fig
