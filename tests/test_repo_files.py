"""The repository's own files: what .gitignore hides (the suite's outputs, not the repository's TOMLs) and the
documentation's honesty about paths that exist only in the development checkout."""

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


DOC_PAGES = sorted(str(p.relative_to(REPO)) for p in (REPO / "docs").rglob("*.md"))


@pytest.mark.parametrize("page", ["README.md", *DOC_PAGES])
def test_docs_say_which_paths_exist_only_in_the_development_checkout(page):
    """``../shared/data`` is the developers' workspace: each paragraph or code block of the README or a
    documentation page that uses it is followed (or preceded) by the sentence that says so and where else to get
    the data."""
    text = (REPO / page).read_text()
    blocks = re.split(r"\n\s*\n", text)
    uses = [i for i, block in enumerate(blocks) if "../shared/data" in block]
    for i in uses:
        around = " ".join(blocks[max(0, i - 1): i + 2])
        assert "development checkout" in around, blocks[i]


def test_the_bubil_example_is_documented_with_its_source():
    """The BU-BIL example (through ``folder``) names where else to get the data."""
    datasets = (REPO / "docs" / "datasets.md").read_text()
    assert "../shared/data/bubil-cells" in datasets, "docs/datasets.md no longer runs the BU-BIL example"
    assert "BU-BIL" in datasets and "Boston University" in datasets


def test_readme_fits_a_few_screens_and_its_links_resolve():
    """The README is the short tour (at most 200 lines); every relative link in it names a file of the repository
    (the documentation pages it points into), and every in-page anchor names one of its headings."""
    readme = (REPO / "README.md").read_text()
    assert len(readme.splitlines()) <= 200
    targets = re.findall(r"\]\(([^)\s]+)\)", readme)
    relative = [t for t in targets if not re.match(r"[a-z]+://", t)]
    assert any(t.startswith("docs/") for t in relative)
    slugs = {re.sub(r"[^\w\s-]", "", h).strip().lower().replace(" ", "-")
             for h in re.findall(r"^#+ (.+)$", readme, re.M)}
    for target in relative:
        path, _, anchor = target.partition("#")
        if path:
            assert (REPO / path).is_file(), target
        else:
            assert anchor in slugs, target
