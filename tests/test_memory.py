"""The full-size LIDC pickle (15,096 crops, 1.85 GiB) loads in under 2 GiB of RAM. Slow (about a minute and
2 GB of disk): `nox -s slow`."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


def test_full_size_lidc_pickle_loads_under_2_gib(tmp_path):
    out = tmp_path / "mem.json"
    subprocess.run([sys.executable, "-m", "benchmarks.lidc_memory", "--workdir", str(tmp_path), "--out", str(out)],
                   check=True, cwd=Path(__file__).resolve().parents[1], capture_output=True, timeout=900)
    results = json.loads(out.read_text())["results"]
    for step, r in results.items():
        assert r["peak_rss_gib"] < 2.0, (step, r)
