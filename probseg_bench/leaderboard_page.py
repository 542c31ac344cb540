"""The leaderboard as one self-contained HTML page (``leaderboard --format html``): a page to share.

The page needs no network: its styles and its sorting script are inline. It holds one table per dataset and preset
(the leaderboard's ranking pools), each built by the same code as the terminal and Markdown tables
(:func:`probseg_bench.leaderboard.leaderboard_table`, or :func:`probseg_bench.pivot.pivot_table` with ``--pivot``) on
that pool's rows, so every cell is the text those formats print (mean ± std at three decimals, p-values, published
values and differences): the values equal the JSON format's after the same rounding, and the JSON itself (the rows
of ``--format json``) is embedded in the page, unrounded. The page also carries everything the terminal prints
around the table: the caption, every footnote of the table over all rows, the reference gaps
(:func:`probseg_bench.published.reference_gap`) and the sample-collapse warnings
(:func:`probseg_bench.diagnostics.collapse_warning`), the latter under the table of the rows they name, whose
model cell carries a badge.

A click on a column header sorts the table's rows by it (numbers numerically, by the value shown; empty cells
last), a second click reverses; the header shows the direction (``aria-sort`` and an arrow). The first click on a
ranked metric puts the best value first (↓: ascending, ↑: descending). Partial rows (run with ``--fold``) and rows
with collapsed samples carry a badge; published values and differences are set apart in grey italics.
"""

from __future__ import annotations

import html
import json
import re
from typing import TYPE_CHECKING

from probseg_bench.diagnostics import collapse_warnings
from probseg_bench.published import reference_gap
from probseg_bench.tables import Table

if TYPE_CHECKING:
    from probseg_bench.leaderboard import LeaderboardRow
    from probseg_bench.references import ReferenceTable

TEXT_COLUMNS = frozenset({"dataset", "model", "preset", "config"})
"""Columns sorted as text even when a cell looks like a number (a configuration hash of digits only)."""

_NUMBER = re.compile(r"(<)?([+\-−]?\d+(?:\.\d+)?(?:[eE][+\-]?\d+)?)(?=$|[\s/])")


def sort_key(cell: str) -> float | None:
    """The number a displayed cell sorts by: its leading number (``"0.440 ± 0.006"`` -> 0.44, ``"1/3"`` -> 1,
    ``"−0.012"`` -> -0.012 with the true minus sign, ``"3.1e-05 (n=16)"`` -> 3.1e-05), ``"<0.001"`` -> 0.0 (below
    every p-value shown as a number); None for an empty cell, a dash or text."""
    match = _NUMBER.match(cell.strip())
    if match is None:
        return None
    return 0.0 if match.group(1) else float(match.group(2).replace("−", "-"))


def pools(rows: list[LeaderboardRow]) -> list[tuple[str, str, list[LeaderboardRow]]]:
    """The rows grouped by (dataset label, preset), the leaderboard's ranking pools, in the rows' order."""
    groups: dict[tuple[str, str], list[LeaderboardRow]] = {}
    for row in rows:
        groups.setdefault((row.dataset_label, row.preset), []).append(row)
    return [(dataset, preset, members) for (dataset, preset), members in groups.items()]


def render_page(rows: list[LeaderboardRow], pivot: bool = False, test_metric: str = "ewd",
                references: list[ReferenceTable] | None = None, metric: str = "ewd") -> str:
    """The page: UTF-8 HTML text, one table per (dataset, preset), every text escaped.

    Args:
        rows: :func:`probseg_bench.leaderboard.build_leaderboard`'s rows (best and p-values set).
        pivot: the seed paper's Table II layout (:func:`probseg_bench.pivot.pivot_table`) per pool.
        test_metric: the metric of the p-value column.
        references: published tables shown beside the measured values.
        metric: the pivot's metric (:func:`probseg_bench.pivot.pivot_metric`).

    Raises:
        ProbsegError: as :func:`probseg_bench.pivot.pivot_table` (several configurations in one pivot cell).
    """
    from probseg_bench.leaderboard import leaderboard_table, row_dicts
    from probseg_bench.pivot import pivot_table

    references = references or []

    def build(members: list[LeaderboardRow]) -> Table:
        if pivot:
            return pivot_table(members, metric, references)
        return leaderboard_table(members, test_metric, references)

    whole = build(rows)  # the notes over all rows: those the terminal table prints
    warnings = collapse_warnings(rows)
    collapsed = {id(row): text for row, text in warnings}
    reference_headers = tuple(f" ({r.name})" for r in references)
    sections = []
    for i, (dataset, preset, members) in enumerate(pools(rows)):
        table = build(members)
        row_of: list[LeaderboardRow | None] = [None] * len(table.body) if pivot else list(members)
        local = [text for row, text in warnings if any(row is m for m in members)]
        sections.append(_section(i, dataset, preset, table, row_of, collapsed, local, reference_headers))
    if not rows:
        sections.append('<p class="empty">No records match the filters.</p>')
    notes = [*whole.notes, *reference_gap(rows, references)]
    data = json.dumps(row_dicts(rows, references), indent=1).replace("<", "\\u003c")
    layout = f"pivot: {metric}" if pivot else f"p-values: {test_metric}"
    refs = ", ".join(f"{r.name} ({r.source})" for r in references) or "none"
    meta = f"{len(rows)} rows · {layout} · references: {refs}"
    return _PAGE.format(
        title=_e(whole.title), meta=_e(meta), caption=_e(whole.caption), sections="\n".join(sections),
        notes="".join(f"<li>{_e(note)}</li>" for note in notes), data=data, style=_STYLE, script=_SCRIPT,
        version=_e(_version()),
    ).replace('<section class="notes"><h2>Notes</h2><ul></ul></section>', "")


def _version() -> str:
    from probseg_bench import __version__

    return __version__


def _e(text: str) -> str:
    return html.escape(text, quote=True)


def _section(index: int, dataset: str, preset: str, table: Table, row_of: list[LeaderboardRow | None],
             collapsed: dict[int, str], warnings: list[str], reference_headers: tuple[str, ...]) -> str:
    """One pool's table: a caption with its dataset and preset, a sortable header, the body."""
    columns = list(zip(*table.body, strict=True)) if table.body else [() for _ in table.header]
    shown = [[c for c in col if c not in ("", "–")] for col in columns]  # cells with a value
    numeric = [h not in TEXT_COLUMNS and bool(col) and all(sort_key(c) is not None for c in col)
               for h, col in zip(table.header, shown, strict=True)]
    published = [h.endswith(reference_headers) or h.startswith("Δ ") for h in table.header]
    head = []
    for j, h in enumerate(table.header):
        first = "descending" if h.endswith("↑") else "ascending"
        th_classes = " ".join(c for c, on in (("num", numeric[j]), ("ref", published[j])) if on)
        head.append(f'<th scope="col" class="{th_classes}" data-type="{"num" if numeric[j] else "text"}" '
                    f'data-first="{first}"><button type="button">{_e(h)}<span class="arrow" aria-hidden="true">'
                    "</span></button></th>")
    body = []
    for cells, flags, row in zip(table.body, table.bold, row_of, strict=True):
        row_classes = []
        warning = None if row is None else collapsed.get(id(row))
        if row is not None and row.partial:
            row_classes.append("partial")
        if warning is not None:
            row_classes.append("collapsed")
        if row is None and " — " in cells[1]:  # a pivot row of published values or differences
            row_classes.append("reference")
        tds = []
        for j, (cell, bold) in enumerate(zip(cells, flags, strict=True)):
            classes = [c for c, on in (("num", numeric[j]), ("ref", published[j]), ("best", bold)) if on]
            attrs = f' class="{" ".join(classes)}"' if classes else ""
            key = sort_key(cell) if numeric[j] else None
            if key is not None:
                attrs += f' data-sort="{key!r}"'
            text = f'<span class="v">{f"<strong>{_e(cell)}</strong>" if bold else _e(cell)}</span>'
            if table.header[j] == "folds" and row is not None and row.partial:
                text += '<span class="badge partial-badge" title="a partial row (run with --fold)">partial</span>'
            if j == 1 and warning is not None:
                text += f'<span class="badge collapse-badge" title="{_e(warning)}">collapsed samples</span>'
            tds.append(f"<td{attrs}>{text}</td>")
        row_attr = f' class="{" ".join(row_classes)}"' if row_classes else ""
        if row is not None:
            row_attr += f' data-config="{_e(row.config)}"'
        body.append(f"<tr{row_attr}>{''.join(tds)}</tr>")
    alerts = "".join(f'<p class="warning">{_e(w)}</p>' for w in warnings)
    return (f'<section class="pool" id="table-{index}">\n<div class="scroll"><table class="leaderboard">'
            f'<caption><span class="dataset">{_e(dataset)}</span> <span class="preset">preset {_e(preset)}</span>'
            f' <span class="count">{len(table.body)} rows</span></caption>\n'
            f"<thead><tr>{''.join(head)}</tr></thead>\n<tbody>\n" + "\n".join(body) + "\n</tbody></table></div>\n"
            f"{alerts}</section>")


_STYLE = """
:root { --ink: #1f2328; --muted: #59636e; --line: #d1d9e0; --head: #f6f8fa; --zebra: #fafbfc;
  --best: #dafbe1; --ref: #f3f4f6; --warn-bg: #fff8c5; --warn-line: #d4a72c; --bad-bg: #ffebe9; --bad: #cf222e;
  --accent: #0969da; color-scheme: light; }
* { box-sizing: border-box; }
body { margin: 0; background: #fff; color: var(--ink);
  font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; }
main { margin: 0 auto; padding: 2rem 1.5rem 3rem; }
h1 { font-size: 1.6rem; margin: 0 0 .25rem; }
h2 { font-size: 1.05rem; margin: 2rem 0 .5rem; }
.meta { color: var(--muted); margin: 0 0 1rem; }
.how { color: var(--muted); font-size: .88rem; max-width: 75rem; margin: 0 0 1.5rem; }
.pool { margin: 1.75rem 0; }
.scroll { overflow: auto; max-height: 85vh; border: 1px solid var(--line); border-radius: 8px; }
table.leaderboard { border-collapse: separate; border-spacing: 0; width: 100%; font-size: .9rem; }
caption { caption-side: top; text-align: left; padding: .6rem .8rem; background: #fff; border-bottom: 1px solid
  var(--line); position: sticky; left: 0; }
caption .dataset { font-weight: 650; font-size: 1.05rem; }
caption .preset { margin-left: .5rem; padding: .05rem .5rem; border-radius: 999px; background: #ddf4ff;
  color: #0550ae; font-size: .8rem; }
caption .count { color: var(--muted); font-size: .8rem; margin-left: .5rem; }
th { position: sticky; top: 0; z-index: 1; background: var(--head); border-bottom: 1px solid var(--line);
  padding: 0; text-align: left; vertical-align: bottom; white-space: nowrap; }
th button { all: unset; cursor: pointer; display: block; padding: .45rem .6rem; font-weight: 600; }
th button:hover { color: var(--accent); }
th button:focus-visible { outline: 2px solid var(--accent); outline-offset: -2px; }
th.num, td.num { text-align: right; }
th .arrow { display: inline-block; width: 1em; color: var(--accent); }
th[aria-sort="ascending"] .arrow::after { content: "\\25B2"; font-size: .7em; }
th[aria-sort="descending"] .arrow::after { content: "\\25BC"; font-size: .7em; }
th[aria-sort] { background: #eaeef2; }
td { padding: .4rem .55rem; border-bottom: 1px solid #eef1f4; white-space: nowrap; }
td.num { font-variant-numeric: tabular-nums; }
tbody tr:nth-child(even) td { background: var(--zebra); }
tbody tr:hover td { background: #f0f6ff; }
td.best { background: var(--best) !important; }
th.ref, td.ref { color: var(--muted); font-style: italic; }
td.ref { background: var(--ref) !important; }
tr.reference td { color: var(--muted); font-style: italic; }
tr.partial td { color: #6e5b00; }
tr.collapsed td:nth-child(2) { color: var(--bad); }
.badge { display: inline-block; margin-left: .4rem; padding: 0 .4rem; border-radius: 999px; font-size: .72rem;
  font-style: normal; font-weight: 600; vertical-align: 1px; }
.partial-badge { background: var(--warn-bg); color: #7d4e00; border: 1px solid var(--warn-line); }
.collapse-badge { background: var(--bad-bg); color: var(--bad); border: 1px solid #ff8182; }
p.warning { background: var(--warn-bg); border-left: 4px solid var(--warn-line); padding: .5rem .8rem;
  margin: .6rem 0 0; font-size: .88rem; list-style: none; }
.notes ul { padding: 0; margin: 0; }
.notes li { margin: .35rem 0 .35rem 1.2rem; font-size: .88rem; color: #31373d; }
footer { margin-top: 2rem; color: var(--muted); font-size: .8rem; }
footer a { color: var(--accent); }
.empty { color: var(--muted); }
"""

_SCRIPT = """
(function () {
  "use strict";
  function value(row, index, numeric) {
    var cell = row.cells[index];
    if (!cell) { return null; }
    if (numeric) {
      var key = cell.getAttribute("data-sort");
      return key === null ? null : parseFloat(key);
    }
    var text = (cell.querySelector(".v") || cell).textContent.trim();  /* the value, not its badge */
    return text === "" || text === "\\u2013" ? null : text;
  }
  function sortBy(th) {
    var table = th.closest("table");
    var tbody = table.tBodies[0];
    var index = Array.prototype.indexOf.call(th.parentNode.children, th);
    var numeric = th.getAttribute("data-type") === "num";
    var current = th.getAttribute("aria-sort");
    var direction = current === null ? th.getAttribute("data-first")
      : (current === "ascending" ? "descending" : "ascending");
    var sign = direction === "ascending" ? 1 : -1;
    var rows = Array.prototype.slice.call(tbody.rows).map(function (row, i) {
      return { row: row, key: value(row, index, numeric), i: i };
    });
    rows.sort(function (a, b) {
      if (a.key === null || b.key === null) {
        return a.key === b.key ? a.i - b.i : (a.key === null ? 1 : -1);  /* empty cells last */
      }
      var c = numeric ? a.key - b.key : a.key.localeCompare(b.key, undefined, { numeric: true });
      return c !== 0 ? sign * c : a.i - b.i;
    });
    rows.forEach(function (r) { tbody.appendChild(r.row); });
    Array.prototype.forEach.call(th.parentNode.children, function (h) { h.removeAttribute("aria-sort"); });
    th.setAttribute("aria-sort", direction);
  }
  document.querySelectorAll("table.leaderboard th button").forEach(function (button) {
    button.addEventListener("click", function () { sortBy(button.parentNode); });
  });
  var link = document.getElementById("download-json");
  var data = document.getElementById("leaderboard-data");
  if (link && data && window.Blob && window.URL) {
    link.href = URL.createObjectURL(new Blob([data.textContent], { type: "application/json" }));
  }
})();
"""

_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="generator" content="probseg-bench {version}">
<title>{title}</title>
<style>{style}</style>
</head>
<body>
<main>
<h1>{title}</h1>
<p class="meta">{meta}</p>
<p class="how">{caption}. Click a column header to sort by it; click again to reverse.</p>
{sections}
<section class="notes"><h2>Notes</h2><ul>{notes}</ul></section>
<footer>Written by probseg-bench {version} (<code>probseg-bench leaderboard --format html</code>).
<a id="download-json" download="leaderboard.json" href="#">The rows as JSON</a> (unrounded, as
<code>--format json</code>).</footer>
</main>
<script type="application/json" id="leaderboard-data">{data}</script>
<script>{script}</script>
</body>
</html>
"""

__all__ = ["pools", "render_page", "sort_key"]
