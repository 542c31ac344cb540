"""The plugin contract: the hooks a probseg-bench plugin may implement.

Each hook receives a typed :class:`probseg_bench.api.Registry` of its kind (``Registry[ModelSpec]``,
``Registry[RegularizerSpec]``, ``Registry[DatasetSpec]``, ``Registry[LoggerSpec]``) and adds specs to it, so that
built-in and third-party plugins write identical code::

    from probseg_bench import hookimpl
    from probseg_bench.api import ModelSpec, Registry

    @hookimpl
    def probseg_bench_register_models(registry: Registry[ModelSpec]) -> None:
        registry.add(ModelSpec(name="my-model", description="...", factory=build_my_model))

A plugin is made known by an entry point in the group ``probseg_bench`` that points to the module holding
these functions (``[project.entry-points.probseg_bench] my-models = "my_package.plugin"``).
"""

from __future__ import annotations

import pluggy

from probseg_bench import PROJECT
from probseg_bench.api import DatasetSpec, LoggerSpec, ModelSpec, Registry, RegularizerSpec

hookspec = pluggy.HookspecMarker(PROJECT)


@hookspec
def probseg_bench_register_models(registry: Registry[ModelSpec]) -> None:
    """Add :class:`probseg_bench.api.ModelSpec` objects with ``registry.add(spec)``.

    The spec's ``factory(latent_dim=..., in_channels=..., **hyperparameters)`` must build a ``torch.nn.Module``
    implementing :class:`probseg_bench.api.LatentSegmentationModel`. Import torch inside the factory, not at module
    level.
    """


@hookspec
def probseg_bench_register_regularizers(registry: Registry[RegularizerSpec]) -> None:
    """Add :class:`probseg_bench.api.RegularizerSpec` objects (latent regularizers such as KL or Sinkhorn)."""


@hookspec
def probseg_bench_register_datasets(registry: Registry[DatasetSpec]) -> None:
    """Add :class:`probseg_bench.api.DatasetSpec` objects (loaders returning MultiRaterData)."""


@hookspec
def probseg_bench_register_loggers(registry: Registry[LoggerSpec]) -> None:
    """Add :class:`probseg_bench.api.LoggerSpec` objects (training-curve loggers, chosen with ``--log NAME``).

    The spec's ``factory(log_dir, run_name, first_step)`` returns a :class:`probseg_bench.api.CurveLogger`; import
    the logger's package (tensorboard, mlflow, wandb) inside the factory and in ``check``, not at module level.
    """
