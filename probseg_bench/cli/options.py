"""The options that several commands take, declared once: each alias carries the flag names, the type and the one
help text; a command gives the alias's default (``DEFAULT_*`` below where it is not None / empty / False) in its
signature. ``tests/test_cli_options.py`` compares every command's options and fails when a name drifts (another
default, type or help text) outside its short list of deliberate differences.

Families of one name with different meanings have their own alias, named for the family:
``--model`` picks the model to train (``Model``), the stored run to analyse (``StoredModel``) or filters records
(``ModelFilter``); ``--preset`` is the protocol to train under (``Preset``, default paper; ``ValidatePreset``,
default quick) or a filter of stored records (``PresetFilter``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from probseg_bench.cli._app import CONFIG_HASH_HELP, FORMAT_HELP, STORAGE_HELP
from probseg_bench.cli.common import REFERENCE_HELP
from probseg_bench.presets import PRESETS
from probseg_bench.request import DEFAULT_DEVICE as DEFAULT_DEVICE  # the defaults live in the core
from probseg_bench.request import DEFAULT_LOG_DIR as DEFAULT_LOG_DIR
from probseg_bench.request import DEFAULT_PRESET as DEFAULT_PRESET
from probseg_bench.request import DEFAULT_RUN_DIR as DEFAULT_RUN_DIR
from probseg_bench.request import DEFAULT_SEED as DEFAULT_SEED

DEFAULT_VALIDATE_PRESET = "quick"
"""``validate``'s preset: it compares the models with the known truth and with each other, not with the paper, and
the eight built-ins then train in about 20 minutes on 2 CPU cores. Changing it would silently store other records
under the same command, so it stays."""
DEFAULT_FORMAT = "table"
DEFAULT_EXECUTOR = "local"

# what to train: run, tune (validate trains several models: its own --model)
Model = Annotated[str | None, typer.Option("--model", "-m", help="Model plugin (see `probseg-bench list`).")]
Dataset = Annotated[str | None, typer.Option("--dataset", help="Dataset plugin (see `probseg-bench list`).")]
Regularizer = Annotated[str | None, typer.Option(
    "--regularizer", help="Regularizer plugin in the model's swappable term (spunet: sinkhorn -> mmd).")]
Flow = Annotated[str | None, typer.Option("--flow", help="Posterior flow of punet-nf: planar, radial or maf.")]
Hp = Annotated[list[str], typer.Option("--hp", help="Hyperparameter override NAME=VALUE (repeatable).")]
LatentDim = Annotated[int | None, typer.Option(
    "--latent-dim", "-d", help="Latent dimension (default: the model's reference d, see `list --details`; else 6).")]
"""One latent dim (tune, validate); ``run`` takes several (``LatentDims``)."""
LatentDims = Annotated[list[int], typer.Option(
    "--latent-dim", "-d", help="Latent dimension; repeat for a grid (default: the model's reference d, see "
                               "`list --details`; else 6).")]

# how: the protocol (run, tune, validate)
Preset = Annotated[str | None, typer.Option(
    "--preset",
    help=f"Protocol preset: {', '.join(PRESETS)} (default: {DEFAULT_PRESET}; run --params FILE: the file's).")]
ValidatePreset = Annotated[str, typer.Option(
    "--preset", help=f"Protocol preset: {', '.join(PRESETS)} [default: {DEFAULT_VALIDATE_PRESET}, not run's "
                     f"{DEFAULT_PRESET}: the models are compared with the truth and each other, in minutes].",
    show_default=False)]
Epochs = Annotated[int | None, typer.Option(
    "--epochs", help="Replace the preset's epochs (e.g. a smoke test); with run --config, in every cell.")]
Seed = Annotated[int | None, typer.Option(
    "--seed", help=f"Seed of the split, initialisation and sampling, and of tune's sampler (default: {DEFAULT_SEED}; "
                   "run --params FILE: the file's).")]
Device = Annotated[str | None, typer.Option(
    "--device", help=f"auto, cpu or cuda (default: {DEFAULT_DEVICE}; with run --config, the grid's device).")]

# the data: run, tune, validate, analyze, data
DataRoot = Annotated[Path | None, typer.Option("--data-root", help="Dataset folder, for plugins that need one.")]
DatasetParam = Annotated[list[str], typer.Option(
    "--dataset-param", help="Dataset parameter NAME=VALUE (repeatable).")]
TrustPickle = Annotated[bool, typer.Option(
    "--trust-pickle", help="Allow unpickling the dataset's files (runs their code).")]

# where results go
Storage = Annotated[str, typer.Option("--storage", help=STORAGE_HELP, show_default=False)]
RunDir = Annotated[Path, typer.Option("--run-dir", help="Where best checkpoints are written.")]
Log = Annotated[str | None, typer.Option(
    "--log", help="Also write each fold's training curves (every loss term, validation loss, learning rate, "
                  "effective rank per epoch) with this logger: tensorboard (pip install 'probseg-bench[tensorboard]'), "
                  "or a plugin's (see `probseg-bench list`).")]
LogDir = Annotated[Path, typer.Option("--log-dir", help="Where --log writes (tensorboard --logdir DIR).")]

# where the work runs: run, tune
Executor = Annotated[str, typer.Option(
    "--executor", help="local (this machine), ray (a Ray cluster: run's grid cells, tune's worker actors) or slurm "
                       "(run's grid cells, tune's workers, as Slurm jobs through submitit).")]
ExecutorOptions = Annotated[list[str], typer.Option(
    "--executor-option", help="Executor setting KEY=VALUE (repeatable), e.g. partition=gpu, time=120, mem_gb=8 with "
                              "--executor slurm; an unknown key is named with the known ones.")]
Address = Annotated[str | None, typer.Option(
    "--address", help="With --executor ray: the cluster [default: new].")]

# reading the results: leaderboard, compare (and run's final leaderboard)
LeaderboardFormat = Annotated[str, typer.Option("--format", help=FORMAT_HELP)]
TableOrJson = Annotated[str, typer.Option("--format", help="table or json")]
Reference = Annotated[list[str], typer.Option("--reference", help=REFERENCE_HELP)]
Pivot = Annotated[bool, typer.Option("--pivot", help="The paper's Table II layout: latent dims as columns.")]
ModelFilter = Annotated[list[str], typer.Option("--model", help="Only these models (repeatable).")]
DatasetFilter = Annotated[list[str], typer.Option("--dataset", help="Only these datasets (repeatable).")]
LatentDimFilter = Annotated[list[int], typer.Option(
    "--latent-dim", help="Only these latent dimensions (repeatable) [default: all].")]
PresetFilter = Annotated[list[str], typer.Option("--preset", help="Only records of these presets (repeatable).")]
ConfigHashFilter = Annotated[list[str], typer.Option("--config-hash", help=CONFIG_HASH_HELP)]

# one stored run or set of records: analyze, compare
StoredModel = Annotated[str, typer.Option("--model", "-m", help="Model of the stored run.")]
StoredDataset = Annotated[str, typer.Option("--dataset", help="Dataset of the stored records.")]
