"""The built-in ``tensorboard`` curve logger: :class:`torch.utils.tensorboard.SummaryWriter` event files under
``<log_dir>/<run name>`` (needs the optional ``tensorboard`` package: ``pip install 'probseg-bench[tensorboard]'``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from probseg_bench.api import CurveLogger
from probseg_bench.errors import ProbsegError

INSTALL = "pip install 'probseg-bench[tensorboard]'"


def require_tensorboard() -> None:
    """Raise :class:`ProbsegError` (one line naming ``--log tensorboard`` and the ``pip install`` command) when
    ``tensorboard`` (which ``torch.utils.tensorboard`` writes through) cannot be imported."""
    try:
        import tensorboard  # noqa: F401
        from torch.utils.tensorboard import SummaryWriter  # noqa: F401
    except ImportError:
        raise ProbsegError(f"--log tensorboard: the tensorboard package is not installed; {INSTALL}") from None


class TensorBoardLogger(CurveLogger):
    """One run's event files in ``log_dir / run_name``: a scalar per tag and step; the configuration as the text
    summary ``config`` at step 0. ``first_step`` is passed as the writer's ``purge_step``: TensorBoard hides what an
    earlier attempt of the run wrote at that step or later, so a resumed fold shows each epoch once. Each
    :meth:`log_scalars` is flushed, so a running fold's curves are visible at once.

    Raises:
        ProbsegError: the tensorboard package is missing.
        OSError: the folder cannot be created or written.
    """

    def __init__(self, log_dir: Path, run_name: str, first_step: int = 1) -> None:
        require_tensorboard()
        from torch.utils.tensorboard import SummaryWriter

        self.path = Path(log_dir) / run_name
        self.writer = SummaryWriter(log_dir=str(self.path), purge_step=first_step)

    def log_scalars(self, step: int, values: Mapping[str, float]) -> None:
        for tag, value in values.items():
            self.writer.add_scalar(tag, value, global_step=step)
        self.writer.flush()

    def log_config(self, config: Mapping[str, Any]) -> None:
        text = json.dumps(dict(config), indent=2, sort_keys=True, default=str)
        self.writer.add_text("config", "\n".join("    " + line for line in text.splitlines()), global_step=0)

    def flush(self) -> None:
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


__all__ = ["INSTALL", "TensorBoardLogger", "require_tensorboard"]
