"""Built-in dataset plugins, one module a family, each exporting its specs as a module-level ``SPECS`` tuple that
the registration hook below adds in order:

- :mod:`probseg_datasets.lidc`: ``lidc-sample`` (embedded), ``lidc`` (the PU-Net port's pickle), ``lidc-crops``;
- :mod:`probseg_datasets.qubiq`: the six QUBIQ 2021 datasets;
- :mod:`probseg_datasets.folder`: ``folder``, a user's own data;
- :mod:`probseg_datasets.synthetic`: ``synthetic``, generated data with a known distribution over masks.

:mod:`probseg_datasets.common` and :mod:`probseg_datasets.cimd` hold readers the loaders share;
:mod:`probseg_datasets.geometry` brings a NIfTI mask onto its image's voxel grid (or refuses it).
"""

from __future__ import annotations

from probseg_bench import hookimpl
from probseg_bench.api import DatasetSpec, Registry


@hookimpl
def probseg_bench_register_datasets(registry: Registry[DatasetSpec]) -> None:
    from probseg_datasets import folder, lidc, qubiq, synthetic

    for module in (lidc, qubiq, folder, synthetic):
        for spec in module.SPECS:
            registry.add(spec)
