"""Shared fixtures: the shared real-data folder (skipped with a reason when absent), tiny presets."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture
def shared_data() -> Path:
    """../shared/data of the developers' workspace; a user's clone has none, so tests that need it skip."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real sample data folder {SHARED_DATA} is absent (only in the developers' workspace)")
    return SHARED_DATA


@pytest.fixture
def tiny_preset(monkeypatch: pytest.MonkeyPatch) -> str:
    """Register a preset 'tiny' (1 epoch, batch 4, 4 evaluation samples) for fast end-to-end tests."""
    from probseg_bench.presets import PRESETS, Preset

    monkeypatch.setitem(
        PRESETS, "tiny",
        Preset(name="tiny", description="test preset", epochs=1, warmup_epochs=1, batch_size=4,
               augment=True, n_eval_samples=4),
    )
    return "tiny"


@pytest.fixture
def run_main(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> Callable[..., tuple[int, str, str]]:
    """Run the console entry point ``probseg-bench ARGS`` in-process: ``run_main(*args) -> (exit code, stdout,
    stderr)``, exactly as the installed script (typer's exception handling, ``sys.exit``)."""
    from probseg_bench.cli import main

    def run(*args: str) -> tuple[int, str, str]:
        monkeypatch.setattr(sys, "argv", ["probseg-bench", *args])
        with pytest.raises(SystemExit) as exit_info:
            main()
        out, err = capsys.readouterr()
        return int(exit_info.value.code or 0), out, err

    return run
