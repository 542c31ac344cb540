"""A self-contained HTML report: the figures embedded as base64 PNG, the run's metrics, the command."""

from __future__ import annotations

import base64
import html
from pathlib import Path
from typing import Any

from probseg_bench.atomic import atomic_write_text


def write_report(folder: Path, title: str, command: str, metrics: dict[str, Any], info: dict[str, Any],
                 figures: list[tuple[str, Path, str]], warnings: list[str] | None = None) -> Path:
    """Write ``folder/report.html`` (atomically; :class:`~probseg_bench.errors.OutputError` naming it when the
    write fails).

    Args:
        metrics: metric -> stored test value; info: run facts (model, dataset, latent dim, fold, ...);
        figures: (title, PNG path, one-sentence reading) per figure; warnings: lines shown above the run facts
            (e.g. a sample collapse).
    """
    alerts = "".join(f"<p class='warning'>{html.escape(w)}</p>" for w in warnings or [])
    rows = "".join(f"<tr><td>{html.escape(k)}</td><td>{'' if v is None else f'{v:.4f}'}</td></tr>"
                   for k, v in metrics.items())
    facts = "".join(f"<tr><td>{html.escape(str(k))}</td><td>{html.escape(str(v))}</td></tr>" for k, v in info.items())
    blocks = []
    for name, png, caption in figures:
        data = base64.b64encode(png.read_bytes()).decode("ascii")
        blocks.append(f"<h2>{html.escape(name)}</h2><img src='data:image/png;base64,{data}' style='max-width:100%'>"
                      f"<p>{html.escape(caption)}</p>")
    page = f"""<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font-family:sans-serif;max-width:1100px;margin:2em auto}} td{{padding:2px 10px}}
table{{border-collapse:collapse}} tr:nth-child(even){{background:#f3f3f3}} code{{background:#eee;padding:2px}}
.warning{{background:#fff3cd;border-left:4px solid #c80;padding:6px 10px}}</style>
</head><body><h1>{html.escape(title)}</h1>
<p>made by <code>{html.escape(command)}</code></p>
{alerts}
<h2>Run</h2><table>{facts}</table>
<h2>Test metrics (mean over test images)</h2><table>{rows}</table>
{''.join(blocks)}
</body></html>
"""
    return atomic_write_text(folder / "report.html", page)
