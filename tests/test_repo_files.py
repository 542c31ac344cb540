"""The repository's own files: what .gitignore hides (the suite's outputs, not the repository's TOMLs) and the
README's honesty about paths that exist only in the development checkout."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from probseg_bench.tuning import objectives

REPO = Path(__file__).resolve().parents[1]


def _ignored(paths: list[str]) -> set[str]:
    """The paths that the repository's .gitignore hides (tracked or not, existing or not)."""
    if shutil.which("git") is None or not (REPO / ".git").exists():
        pytest.skip("not a git checkout")
    proc = subprocess.run(["git", "check-ignore", "--no-index", "--stdin"], input="\n".join(paths), text=True,
                          capture_output=True, cwd=REPO)
    assert proc.returncode in (0, 1), proc.stderr
    return set(proc.stdout.split())


def test_gitignore_hides_the_suites_outputs():
    outputs = [f"spunet-lidc-sample-{objective}.toml" for objective in objectives()]  # tune's default STUDY.toml
    outputs += ["punet-synthetic-val_ewd.toml", "probseg-analysis/punet-lidc-sample-d6-fold0-abc/report.html",
                "probseg-results.db", "probseg-runs/x.pt", "probseg-validation/validation.json"]
    assert _ignored(outputs) == set(outputs)


def test_gitignore_keeps_the_repositorys_tomls():
    proc = subprocess.run(["git", "ls-files", "*.toml", "**/*.toml"], text=True, capture_output=True, cwd=REPO)
    tracked = proc.stdout.split() if proc.returncode == 0 else []
    ours = [*tracked, "pyproject.toml", "benchmarks/paper_grid.toml", "examples/my-plugin/pyproject.toml",
            "noxfile.py", "benchmarks/my_grid.toml", "my-study.toml"]
    assert _ignored(ours) == set()


def test_readme_says_which_paths_exist_only_in_the_development_checkout():
    """``../shared/data`` is the developers' workspace: each README paragraph or code block that uses it is followed
    (or preceded) by the sentence that says so and where else to get the data."""
    readme = (REPO / "README.md").read_text()
    blocks = re.split(r"\n\s*\n", readme)
    uses = [i for i, block in enumerate(blocks) if "../shared/data" in block]
    assert uses, "the README no longer mentions ../shared/data: drop this test"
    for i in uses:
        around = " ".join(blocks[max(0, i - 1): i + 2])
        assert "development checkout" in around, blocks[i]
    assert "BU-BIL" in readme and "Boston University" in readme
