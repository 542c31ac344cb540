"""probseg-bench: a benchmark suite for probabilistic (multi-annotator) medical image segmentation.

Plugin authors use :data:`hookimpl` and the types in :mod:`probseg_bench.api`.
"""

from __future__ import annotations

import pluggy

__version__ = "0.1.0"
PROJECT = "probseg_bench"

hookimpl = pluggy.HookimplMarker(PROJECT)
"""Decorator marking a plugin's hook implementations (``@hookimpl def probseg_bench_register_models(...)``)."""

__all__ = ["PROJECT", "__version__", "hookimpl"]
