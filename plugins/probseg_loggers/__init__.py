"""Built-in training-curve logger plugins (``--log NAME``): ``tensorboard``.

Registered through the entry-point group ``probseg_bench`` like a third-party logger (MLflow, W&B: see
:class:`probseg_bench.api.LoggerSpec`); the logger's package is imported only when it is used.
"""

from __future__ import annotations

from pathlib import Path

from probseg_bench import hookimpl
from probseg_bench.api import CurveLogger, LoggerSpec, Registry


def check_tensorboard() -> None:
    """Raise ProbsegError (one line with the ``pip install`` command) when the ``tensorboard`` package is missing."""
    from probseg_loggers.tensorboard_logger import require_tensorboard

    require_tensorboard()


def build_tensorboard(log_dir: Path, run_name: str, first_step: int) -> CurveLogger:
    """The ``tensorboard`` spec's factory: a :class:`~probseg_loggers.tensorboard_logger.TensorBoardLogger` writing
    ``log_dir / run_name`` from step ``first_step`` on (imported here: no torch or tensorboard import at plugin
    load)."""
    from probseg_loggers.tensorboard_logger import TensorBoardLogger

    return TensorBoardLogger(log_dir, run_name, first_step)


TENSORBOARD = LoggerSpec(
    name="tensorboard",
    description="TensorBoard event files (torch.utils.tensorboard), one run per fold or trial: "
                "tensorboard --logdir DIR",
    factory=build_tensorboard,
    check=check_tensorboard,
)


@hookimpl
def probseg_bench_register_loggers(registry: Registry[LoggerSpec]) -> None:
    registry.add(TENSORBOARD)


__all__ = ["TENSORBOARD", "build_tensorboard", "check_tensorboard", "probseg_bench_register_loggers"]
