"""The leaderboard page (``leaderboard --format html``): its cells are the JSON format's values after the tables'
rounding, every footnote and warning of the terminal table is on it, text is escaped; and in a real browser
(Debian's Chromium, headless through Playwright) it loads without console errors and a click on a column header
reorders the rows. The browser tests skip when Playwright or Chromium is missing, unless PROBSEG_REQUIRE_BROWSER=1
(CI, whose .ci/run installs both): then they fail."""

from __future__ import annotations

import importlib.util
import json
import os
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from probseg_bench.cli import app
from probseg_bench.diagnostics import collapse_warnings
from probseg_bench.errors import ProbsegError
from probseg_bench.leaderboard import build_leaderboard, leaderboard_table, mean_std, render
from probseg_bench.leaderboard_page import render_page, sort_key
from probseg_bench.published import reference_gap
from probseg_bench.references import get_references
from probseg_bench.results import FoldRecord, ResultsStore

ROOT = Path(__file__).resolve().parents[1]


def fold(model: str, fold: int, ewd: float, er: float = 3.0, d: int = 6, dataset: str = "lidc",
         variant: str = "", sample_div: float = 0.20, n_folds: int = 3) -> FoldRecord:
    """A fabricated fold record: 4 test images whose EWD average to ``ewd``; annotator diversity 0.30."""
    per_image = [ewd - 0.01, ewd + 0.01, ewd - 0.02, ewd + 0.02]
    return FoldRecord(
        model=model, dataset=dataset, latent_dim=d, fold=fold, seed=0, preset="paper",
        config_hash=f"{model}-{variant}-{d}-hash", split_hash=f"split-{dataset}", hyperparameters={},
        protocol={"n_folds": n_folds}, variant=variant,
        metrics={"ged": ewd / 2, "hm_iou": 1 - ewd, "ewd": ewd, "er": er, "sample_diversity": sample_div,
                 "annotator_diversity": 0.30},
        per_image={"ewd": per_image, "hm_iou": [1 - e for e in per_image]}, test_ids=["a", "b", "c", "d"],
        timings={"train_s": 1.0, "sampling_s": 0.4, "samples_per_image": 16}, versions={},
    )


def records() -> list[FoldRecord]:
    """Three complete rows on lidc (one collapsed, one with a label to escape), a partial row, a second dataset."""
    recs = [fold("spunet", f, e, r) for f, (e, r) in enumerate([(0.44, 4.1), (0.47, 4.3), (0.45, 4.2)])]
    recs += [fold("punet", f, e, r, sample_div=0.01) for f, (e, r) in enumerate([(0.52, 2.0), (0.58, 2.2),
                                                                                  (0.55, 2.1)])]
    recs += [fold("punet-nf", f, e, r, variant="flow=<b>radial</b>") for f, (e, r) in
             enumerate([(0.49, 3.0), (0.50, 3.3), (0.48, 3.1)])]
    recs += [fold("spunet", 0, 0.30, 5.0, d=8)]  # partial: 1 of 3 folds
    recs += [fold("punet", f, e, dataset="synthetic") for f, e in enumerate([0.20, 0.25, 0.22])]
    return recs


def cells(page: str) -> list[dict[str, str]]:
    """The body rows of every table on ``page``: header text -> cell text (tags stripped, badges removed)."""
    out = []
    for table in re.findall(r"<table.*?</table>", page, re.S):
        header = [re.sub(r"<[^>]+>", "", h) for h in re.findall(r"<th\b.*?</th>", table, re.S)]
        for tr in re.findall(r"<tbody>(.*?)</tbody>", table, re.S)[0].split("</tr>")[:-1]:
            tds = [re.sub(r"<span class=\"badge.*?</span>", "", td) for td in re.findall(r"<td\b.*?</td>", tr, re.S)]
            out.append(dict(zip(header, [_text(td) for td in tds], strict=True)))
    return out


def _text(fragment: str) -> str:
    import html

    return html.unescape(re.sub(r"<[^>]+>", "", fragment))


def test_sort_key_reads_the_number_a_cell_shows():
    assert sort_key("0.440 ± 0.006") == 0.44
    assert sort_key("1/3") == 1.0 and sort_key("3") == 3.0
    assert sort_key("−0.012") == -0.012 and sort_key("+0.030") == 0.03
    assert sort_key("3.1e-05 (n=16)") == 3.1e-05
    assert sort_key("<0.001") == 0.0
    assert sort_key("") is None and sort_key("–") is None and sort_key("lidc") is None
    assert sort_key("12ab34cd") is None  # a configuration hash that starts with digits is text


def test_page_cells_equal_the_json_values_and_carry_every_note():
    references = get_references(["paper"])
    rows = build_leaderboard(records())
    page = render(rows, "html", references=references)
    dicts = json.loads(render(rows, "json", references=references))
    shown = cells(page)
    assert len(shown) == len(dicts) == 5
    for d in dicts:  # each JSON row is one page row with the same values after the tables' rounding
        (cell,) = [c for c in shown if c["model"] == d["label"] and c["d"] == str(d["latent_dim"])
                   and c["dataset"] == d["dataset_label"]]
        for metric in ("ewd", "er", "ged", "hm_iou"):
            header = next(h for h in cell if h.lower().replace("-", "_").startswith(metric + " ")
                          or h.lower() == metric)
            assert cell[header] == mean_std(d[f"{metric}_mean"], d[f"{metric}_std"]), (metric, header)
        p = d["p_vs_best"]
        assert cell["p vs best (ewd)"] == ("" if p is None else "<0.001" if p < 0.001 else f"{p:.3f}")
        assert cell["folds"] == (f"{d['folds']}/{d['expected_folds']}" if d["partial"] else str(d["folds"]))
    # the paper's published EWD of spunet at d=6 on lidc stands beside the measured one
    spunet = next(c for c in shown if c["model"] == "spunet" and c["d"] == "6")
    assert spunet["EWD (paper)"] == "0.440 ± 0.006" and spunet["Δ EWD"] == "+0.013"
    # the embedded data is the JSON format's output, unrounded
    embedded = re.search(r'<script type="application/json" id="leaderboard-data">(.*?)</script>', page, re.S)
    assert embedded is not None and json.loads(embedded.group(1)) == dicts
    # every note of the terminal table, the reference gaps and the collapse warnings, escaped
    table = leaderboard_table(rows, "ewd", references)
    (warning,) = [w for _, w in collapse_warnings(rows)]
    assert "punet on lidc, d=6" in warning
    notes = [*table.notes, *reference_gap(rows, references), warning, table.caption]
    assert any("partial row" in n for n in notes) and len(table.notes) >= 2
    import html

    for note in notes:
        assert html.escape(note) in page, note
    assert 'class="partial"' in page and "collapsed samples" in page


def test_page_escapes_text_and_needs_no_network():
    page = render(build_leaderboard(records()), "html")
    assert "<b>radial</b>" not in page and "flow=&lt;b&gt;radial&lt;/b&gt;" in page
    assert not re.search(r"(src|href)=\"(https?:)?//", page) and "<link" not in page and "@import" not in page
    assert page.count("<table") == 2  # one table per dataset and preset
    assert '<span class="dataset">lidc</span> <span class="preset">preset paper</span>' in page


def test_pivot_page_has_one_table_per_pool():
    rows = build_leaderboard([r for r in records() if r.model != "punet-nf"])
    page = render_page(rows, pivot=True, references=get_references(["paper"]))
    assert page.count("<table") == 2 and "d=6" in page and "d=8" in page
    assert "spunet — paper (" in page  # the pivot's row of published values


def test_cli_writes_the_page_to_output(tmp_path):
    store = ResultsStore(str(tmp_path / "r.db"))
    for rec in records():
        store.add(rec)
    out = tmp_path / "board.html"
    args = ["leaderboard", "--storage", str(tmp_path / "r.db"), "--reference", "paper"]
    result = CliRunner().invoke(app, [*args, "--format", "html", "--output", str(out)])
    assert result.exit_code == 0, result.output
    assert "<table" not in result.stdout  # the page went to the file
    page = out.read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>") and page.count("<table") == 2
    refused = CliRunner().invoke(app, [*args, "--output", str(tmp_path / "t.txt")])
    assert refused.exit_code != 0 and isinstance(refused.exception, ProbsegError)
    assert "--output" in str(refused.exception) and "html" in str(refused.exception)


# --- in a browser ------------------------------------------------------------------------------------------------

def _screenshot_module():
    spec = importlib.util.spec_from_file_location("leaderboard_screenshot", ROOT / "scripts/leaderboard_screenshot.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def browser():
    """A headless Chromium (the system's, through Playwright); skipped when missing unless
    PROBSEG_REQUIRE_BROWSER=1 (CI), then the test fails."""
    reason = None
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        reason = "Playwright is not installed (pip install -e '.[browser]')"
    executable = _screenshot_module().find_chromium()
    if reason is None and executable is None:
        reason = "no Chromium on PATH (apt-get install chromium)"
    if reason is not None:
        if os.environ.get("PROBSEG_REQUIRE_BROWSER") == "1":
            pytest.fail(f"a browser is required (PROBSEG_REQUIRE_BROWSER=1) but {reason}")
        pytest.skip(reason)
    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=executable, headless=True, args=["--no-sandbox"])
        yield chromium
        chromium.close()


def test_page_in_a_browser_sorts_by_a_clicked_column(browser, tmp_path):
    rows = build_leaderboard(records())
    path = tmp_path / "board.html"
    path.write_text(render(rows, "html", references=get_references(["paper"])), encoding="utf-8")
    dicts = json.loads(render(rows, "json", references=get_references(["paper"])))
    page = browser.new_page()
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(path.as_uri())
    table = page.locator("table.leaderboard").first
    headers = [h.strip() for h in table.locator("thead th").all_inner_texts()]
    model, ewd = headers.index("model"), headers.index("EWD ↓")

    def column(index: int) -> list[str]:
        return [t.strip() for t in table.locator(f"tbody tr td:nth-child({index + 1}) .v").all_inner_texts()]

    before = column(model)
    assert before == ["punet", "punet-nf (flow=<b>radial</b>)", "spunet", "spunet"]  # the rows' order
    lidc = [d for d in dicts if d["dataset"] == "lidc"]
    for d, text in zip(lidc, column(ewd), strict=True):  # the shown values are the JSON's, rounded as the tables
        assert text == mean_std(d["ewd_mean"], d["ewd_std"])
    table.locator("thead th").nth(ewd).click()  # EWD is lower-better: the first click puts the best first
    after = column(ewd)
    assert [float(t.split()[0]) for t in after] == sorted(float(t.split()[0]) for t in after)
    assert column(model)[:2] == ["spunet", "spunet"] and column(model) != before
    assert table.locator("thead th").nth(ewd).get_attribute("aria-sort") == "ascending"
    table.locator("thead th").nth(ewd).click()  # reversed
    assert [float(t.split()[0]) for t in column(ewd)] == sorted((float(t.split()[0]) for t in after), reverse=True)
    assert table.locator("thead th").nth(ewd).get_attribute("aria-sort") == "descending"
    table.locator("thead th").nth(model).click()  # text column: alphabetical
    assert column(model) == sorted(column(model))
    assert errors == []
    page.close()


def test_screenshot_script_writes_a_png(browser, tmp_path):
    path = tmp_path / "board.html"
    path.write_text(render(build_leaderboard(records()), "html"), encoding="utf-8")
    png = tmp_path / "board.png"
    assert _screenshot_module().screenshot(path, png, width=1000, browser=browser) == []  # no console error
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
