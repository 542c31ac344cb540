"""Built-in dataset plugins.

``lidc-sample``: 28 real LIDC-IDRI lung-nodule CT crops (128 x 128, 4 radiologists), embedded in this package
as ``data/lidc_sample.npz`` (converted from the JPEG folder layout by ``scripts/build_lidc_sample.py``).
Licence CC BY 3.0, see ``data/LIDC-IDRI-ATTRIBUTION.txt``.
``lidc`` (the PU-Net port's pickle) and ``lidc-crops`` (the Hierarchical PU-Net PNG crops): see ``lidc.py``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from probseg_bench import hookimpl
from probseg_bench.api import DatasetSpec, HyperParameter, MultiRaterData, ProtocolDefaults
from probseg_bench.errors import ProbsegError

LIDC_SAMPLE_FILE = Path(__file__).parent / "data" / "lidc_sample.npz"

LIDC_LICENSE = "CC BY 3.0 (The Cancer Imaging Archive)"
LIDC_CITATION = (
    "Armato III S. G. et al., The Lung Image Database Consortium (LIDC) and Image Database Resource Initiative "
    "(IDRI): a completed reference database of lung nodules on CT scans, Medical Physics 38(2), 2011; "
    "The Cancer Imaging Archive (TCIA)"
)


def load_lidc_sample(data_root: Path | None = None) -> MultiRaterData:
    """The embedded LIDC-IDRI sample: images float32 [28, 1, 128, 128] in [0, 1] (JPEG grey / 255), masks uint8
    [28, 4, 128, 128], one group per case (the sample carries no patient ids); metadata ``case`` and ``subset``
    (the original training/testing folder, not used by the protocol's split).

    Raises:
        ProbsegError: when a ``data_root`` is given (the sample is embedded) or the package file is damaged.
    """
    import numpy as np

    from probseg_datasets.cimd import to_multirater

    if data_root is not None:
        raise ProbsegError(
            "dataset 'lidc-sample' is embedded in the package and takes no --data-root"
        )
    try:
        with np.load(LIDC_SAMPLE_FILE, allow_pickle=False) as z:
            arrays = {k: z[k] for k in ("images", "masks", "case", "subset")}
    except (OSError, KeyError, ValueError) as exc:
        raise ProbsegError(f"{LIDC_SAMPLE_FILE}: damaged package data ({exc}); reinstall probseg-bench") from None
    return to_multirater(arrays["images"], arrays["masks"], arrays["case"], arrays["subset"], str(LIDC_SAMPLE_FILE))


LIDC_SAMPLE = DatasetSpec(
    name="lidc-sample",
    description="28 real LIDC-IDRI lung-nodule CT crops, 128x128, 4 annotators (embedded, no download)",
    load=load_lidc_sample,
    license=LIDC_LICENSE,
    citation=LIDC_CITATION,
    # every annotation of the 28 crops lies in rows 56..74, columns 53..76: inside the central 32 x 32 window
    # (48..79), 13.6 pixels from the centre at most (tests/test_datasets.py checks this)
    protocol=ProtocolDefaults(epochs=200, warmup_epochs=5, roi_size=32),
)


def load_lidc(data_root: Path | None, trust_pickle: bool = False) -> MultiRaterData:
    """``lidc``: see :func:`probseg_datasets.lidc.load_lidc`."""
    from probseg_datasets.lidc import load_lidc as load

    return load(data_root, trust_pickle=trust_pickle)


def load_lidc_crops(data_root: Path | None, size: int = 128) -> MultiRaterData:
    """``lidc-crops``: see :func:`probseg_datasets.lidc.load_lidc_crops`."""
    from probseg_datasets.lidc import load_lidc_crops as load

    return load(data_root, size=size)


LIDC = DatasetSpec(
    name="lidc",
    description="LIDC-IDRI crops in the PU-Net port's pickle (--trust-pickle, or `data convert` once)",
    load=load_lidc,
    license=LIDC_LICENSE,
    citation=LIDC_CITATION,
    protocol=ProtocolDefaults(epochs=200, warmup_epochs=5),
    parameters=(HyperParameter("trust_pickle", False, "allow unpickling (set by --trust-pickle)", tunable=False),),
    layout="a folder of .pickle files (or one file) holding {key: {image, masks, series_uid}}",
)

LIDC_CROPS = DatasetSpec(
    name="lidc-crops",
    description="LIDC-IDRI PNG crops of the Hierarchical PU-Net release, centre-cropped 180 -> 128",
    load=load_lidc_crops,
    license=LIDC_LICENSE,
    citation=LIDC_CITATION,
    protocol=ProtocolDefaults(epochs=200, warmup_epochs=5),
    parameters=(HyperParameter("size", 128, "centre crop side in pixels", tunable=False),),
    layout="[train|val|test/]images/<patient>/z-<z>_c<crop>.png + gt/<patient>/z-<z>_c<crop>_l<annotator>.png",
)


@hookimpl
def probseg_bench_register_datasets(registry: Any) -> None:
    from probseg_datasets import folder, qubiq, synthetic

    for spec in (LIDC_SAMPLE, LIDC, LIDC_CROPS, *qubiq.SPECS, *folder.SPECS, *synthetic.SPECS):
        registry.add(spec)
