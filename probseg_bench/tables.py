"""Rendering of a format-neutral table (header, cells, bold flags, caption, notes) as Markdown, LaTeX (booktabs),
a rich table, and of row dicts as CSV or JSON: the output formats of ``leaderboard`` and ``run``."""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, field
from typing import Any

from probseg_bench.terminal import to_ascii


@dataclass
class Table:
    """A rendered-format-neutral table: header cells, body cells (plain text), bold flags."""

    title: str
    header: list[str]
    body: list[list[str]]
    bold: list[list[bool]]
    caption: str
    notes: list[str] = field(default_factory=list)  # footnotes (e.g. where reference values come from)


def render_markdown(table: Table) -> str:
    """A Markdown table; bold cells as **x**; the notes as paragraphs after it."""
    lines = ["| " + " | ".join(table.header) + " |", "|" + "---|" * len(table.header)]
    for cells, flags in zip(table.body, table.bold, strict=True):
        lines.append("| " + " | ".join(f"**{c}**" if f else c for c, f in zip(cells, flags, strict=True)) + " |")
    for note in table.notes:
        lines += ["", note]
    return "\n".join(lines) + "\n"


_LATEX_ESCAPES = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                  "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}
_LATEX_SYMBOLS = {"±": r"$\pm$", "↑": r"$\uparrow$", "↓": r"$\downarrow$", "<": r"$<$", "Δ": r"$\Delta$",
                  "−": r"$-$", "—": "---"}
_ascii = to_ascii  # LaTeX comments: plain ASCII (probseg_bench.terminal.ASCII_FALLBACKS)


def latex_escape(text: str) -> str:
    """Escape LaTeX special characters and write ±, arrows and < in math mode."""
    out = "".join(_LATEX_ESCAPES.get(ch, ch) for ch in text)
    for symbol, latex in _LATEX_SYMBOLS.items():
        out = out.replace(symbol, latex)
    return out


def render_latex(table: Table) -> str:
    """A ``tabular`` (booktabs rules) to ``\\input`` inside a ``table`` environment (needs booktabs)."""
    spec = "l" * 2 + "r" * (len(table.header) - 2)
    lines = [f"% {_ascii(table.caption)}", *[f"% {_ascii(note)}" for note in table.notes],
             f"\\begin{{tabular}}{{{spec}}}", "\\toprule",
             " & ".join(latex_escape(h) for h in table.header) + " \\\\", "\\midrule"]
    for cells, flags in zip(table.body, table.bold, strict=True):
        lines.append(" & ".join(f"\\textbf{{{latex_escape(c)}}}" if f else latex_escape(c)
                                for c, f in zip(cells, flags, strict=True)) + " \\\\")
    lines += ["\\bottomrule", "\\end{tabular}"]
    return "\n".join(lines) + "\n"


def render_rich(table: Table) -> Any:
    """A rich renderable: the rich Table (bold cells bold), followed by the notes as lines of text when there are
    any (a rich Group); rich imported here. On a console whose encoding cannot write a character of the table (an
    ASCII terminal), its text is :func:`probseg_bench.terminal.to_ascii`'s, before rich measures the columns."""
    return _PortableRich(table)


def ascii_table(table: Table) -> Table:
    """``table`` with every text in ASCII (:func:`probseg_bench.terminal.to_ascii`)."""
    return Table(to_ascii(table.title), [to_ascii(h) for h in table.header],
                 [[to_ascii(c) for c in row] for row in table.body], table.bold, to_ascii(table.caption),
                 [to_ascii(n) for n in table.notes])


class _PortableRich:
    """:func:`render_rich`'s renderable: builds the rich table for the console it is printed on."""

    def __init__(self, table: Table) -> None:
        self.table = table

    def build(self, encoding: str) -> Any:
        """The rich Table (or Group with the notes) in ``encoding`` (ASCII text where it lacks a character)."""
        t = self.table
        text = "\n".join([t.title, t.caption, *t.header, *(c for row in t.body for c in row), *t.notes])
        try:
            text.encode(encoding)
        except (UnicodeEncodeError, LookupError):
            t = ascii_table(t)
        return _rich(t)

    def __rich_console__(self, console: Any, options: Any) -> Any:
        yield self.build(console.encoding)

    def __rich_measure__(self, console: Any, options: Any) -> Any:
        from rich.measure import Measurement

        return Measurement.get(console, options, self.build(console.encoding))


def _rich(table: Table) -> Any:
    from rich.console import Group
    from rich.table import Table as RichTable
    from rich.text import Text

    out = RichTable(title=table.title, caption=table.caption)
    for i, h in enumerate(table.header):
        out.add_column(h, justify="left" if i < 2 or h == "preset" else "right")
    for cells, flags in zip(table.body, table.bold, strict=True):
        out.add_row(*[Text(c, style="bold" if f else "") for c, f in zip(cells, flags, strict=True)])
    return Group(out, *[Text(note) for note in table.notes]) if table.notes else out


def render_csv(dicts: list[dict[str, Any]]) -> str:
    """CSV with the dict keys as columns (lists joined by ';', None as empty)."""
    buf = io.StringIO()
    fields = list(dict.fromkeys(k for d in dicts for k in d))
    writer = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    for d in dicts:
        writer.writerow({k: (";".join(v) if isinstance(v, list) else ("" if v is None else v)) for k, v in d.items()})
    return buf.getvalue()


def render_json(dicts: list[dict[str, Any]]) -> str:
    return json.dumps(dicts, indent=2) + "\n"
