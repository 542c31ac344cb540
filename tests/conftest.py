"""Shared fixtures: the shared real-data folder (skipped with a reason when absent), tiny presets."""

from __future__ import annotations

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
