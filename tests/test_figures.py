"""The analysis figures without a trained model: Fig. 3 names its rows by test-set number and case (not by an
internal path such as ``training/1``), Fig. 8's identity line is visible and in the legend."""

from __future__ import annotations

import matplotlib.colors
import numpy as np

from probseg_bench.analysis import figures as F
from probseg_bench.analysis.analyze import label_test_image
from probseg_bench.api import MultiRaterData


def _data(groups: list[str], **metadata: list) -> MultiRaterData:
    n = len(groups)
    return MultiRaterData(images=np.zeros((n, 1, 8, 8), np.float32), masks=np.zeros((n, 2, 8, 8), np.uint8),
                          groups=np.array(groups), metadata={k: np.array(v) for k, v in metadata.items()})


def test_a_test_image_is_named_by_its_number_in_the_test_set_and_its_case():
    # lidc-sample: the case column repeats the group (the source's folder/patient)
    sample = _data(["training/1", "testing/12", "testing/23"], case=["training/1", "testing/12", "testing/23"])
    assert label_test_image(sample, 0) == "test image 1 of 3\ncase training/1"
    assert label_test_image(sample, 2) == "test image 3 of 3\ncase testing/23"
    # synthetic: four images per patient, each with its own name
    synthetic = _data(["p0000", "p0000"], case=["img00000", "img00001"], index=[0, 1])
    assert label_test_image(synthetic, 1) == "test image 2 of 2\ncase p0000, img00001"
    # QUBIQ: the case folder is part of the group; a volume's slice is named
    qubiq = _data(["Training/case01", "Training/case02"], case=["case01", "case02"], subset=["Training"] * 2,
                  slice=[14, -1])
    assert label_test_image(qubiq, 0) == "test image 1 of 2\ncase Training/case01, slice 14"
    assert label_test_image(qubiq, 1) == "test image 2 of 2\ncase Training/case02"  # -1: a 2-D case
    # LIDC pickle: series UIDs, an item key that contains the UID; long ids keep their end
    uid = "1.3.6.1.4.1.14519.5.2.1.6279.6001.303494235102183795724852353824"
    lidc = _data([uid], key=[f"{uid}_slice_12"])
    assert label_test_image(lidc, 0) == "test image 1 of 1\ncase …95724852353824_slice_12"
    # no metadata at all: the group
    assert label_test_image(_data(["a", "b"]), 1) == "test image 2 of 2\ncase b"


def test_fig3_rows_are_labelled_with_the_given_names():
    rows, a = 2, 3
    labels = ["test image 1 of 9\ncase testing/12", "test image 4 of 9\ncase testing/40"]
    fig = F.samples_figure(np.zeros((rows, 8, 8)), np.zeros((rows, a, 8, 8), np.uint8), np.zeros((rows, 8, 8)),
                           np.zeros((rows, 8, 8)), labels, "Fig. 3")
    firsts = [ax for ax in fig.axes if ax.get_title() == "image (intensity)"]
    assert [ax.get_ylabel() for ax in firsts] == labels
    assert not any("testing/" in ax.get_title() for ax in fig.axes)  # the case is in the row label only


def test_fig8_identity_line_is_dashed_dark_and_in_the_legend():
    rng = np.random.default_rng(0)
    ann, pred = rng.uniform(0, np.log(2), (2, 4, 16, 16))
    fig = F.entropy_figure(ann, pred, 0.5, 0.4, "Fig. 8")
    ax = fig.axes[0]
    (line,) = [ln for ln in ax.get_lines() if ln.get_label().startswith("identity")]
    assert np.allclose(line.get_xdata(), [0, np.log(2)]) and np.allclose(line.get_ydata(), [0, np.log(2)])
    assert line.get_linestyle() == "--"
    r, g, b, _ = matplotlib.colors.to_rgba(line.get_color())
    assert max(r, g, b) <= 0.5  # dark: visible on the white empty bins (it was white)
    legend = ax.get_legend()
    assert legend is not None and [t.get_text() for t in legend.get_texts()] == [line.get_label()]
