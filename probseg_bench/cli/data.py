"""``probseg-bench data inspect | verify | convert``: look at a dataset before benchmarking on it.

Importing this module (the CLI does) makes every :class:`~probseg_bench.data.loading.DatasetWarning` print as one
line ``warning: <message>`` on stderr, whichever command loads the data (``run`` and ``tune`` too); other
warnings keep Python's display.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any, TextIO

import typer
from rich.table import Table

from probseg_bench.api import DatasetSpec, HyperValue, MultiRaterData
from probseg_bench.cli._app import APP_SETTINGS, app, console, err_console
from probseg_bench.cli.common import parse_hp
from probseg_bench.cli.options import DEFAULT_FORMAT, DataRoot, DatasetParam, TableOrJson, TrustPickle
from probseg_bench.data.converted import check_output, write_converted
from probseg_bench.data.loading import DatasetWarning, dataset_parameters, dataset_warnings, load_dataset
from probseg_bench.errors import ProbsegError
from probseg_bench.plugins import get_plugins

data_app = typer.Typer(help="Inspect, verify and convert datasets.", **APP_SETTINGS)
app.add_typer(data_app, name="data")



_python_showwarning = warnings.showwarning


def show_warning(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                 file: TextIO | None = None, line: str | None = None) -> None:
    """``warnings.showwarning`` of the CLI: a :class:`DatasetWarning` as the one line ``warning: <message>`` on
    stderr; any other warning as Python shows it."""
    if issubclass(category, DatasetWarning):
        print_warning(str(message))
    else:
        _python_showwarning(message, category, filename, lineno, file, line)


def print_warning(note: str) -> None:
    err_console.print(f"warning: {note}", markup=False, highlight=False, soft_wrap=True)


warnings.showwarning = show_warning


def _load(
    dataset: str, data_root: Path | None, params: list[str], trust_pickle: bool
) -> tuple[DatasetSpec, dict[str, HyperValue], MultiRaterData, list[str]]:
    """(spec, resolved parameters, data, the loader's DatasetWarning lines, each printed on stderr)."""
    spec = get_plugins().datasets.get(dataset)
    resolved = dataset_parameters(spec, parse_hp(params, "--dataset-param"))
    with dataset_warnings() as notes:
        data = load_dataset(spec, data_root, resolved, trust_pickle)
    for note in notes:
        print_warning(note)
    return spec, resolved, data, notes


@data_app.command()
def inspect(
    dataset: str = typer.Argument(..., help="Dataset plugin (see `probseg-bench list`)."),
    data_root: DataRoot = None,
    dataset_param: DatasetParam = [],  # noqa: B006  (typer copies a list default)
    trust_pickle: TrustPickle = False,
    fmt: TableOrJson = DEFAULT_FORMAT,
) -> None:
    """Counts (images, groups, annotators, size), the intensity range fed to the model, empty-mask fraction,
    annotator agreement, and what the loader dropped (``warnings``, also printed on stderr)."""
    from probseg_bench.data.inspect import summarize

    if fmt not in ("table", "json"):
        raise ProbsegError(f"--format: expected table or json, got {fmt!r}")
    _, params, data, notes = _load(dataset, data_root, dataset_param, trust_pickle)
    summary: dict[str, Any] = {"dataset": dataset, "parameters": params, **summarize(data), "warnings": notes}
    if fmt == "json":
        print(json.dumps(summary, indent=2))
        return
    table = Table(title=f"dataset {dataset}", show_header=False)
    for key, value in summary.items():
        if key == "intensity_min":
            table.add_row("intensity range fed to the model",
                          f"[{value:.4g}, {summary['intensity_max']:.4g}] ({summary['image_dtype']})")
        elif key == "warnings":
            table.add_row(key, "\n".join(value) or "none")
        elif key not in ("intensity_max", "image_dtype"):
            table.add_row(key, f"{value:.4g}" if isinstance(value, float) else str(value))
    console.print(table)


@data_app.command()
def verify(
    dataset: str = typer.Argument(..., help="Dataset plugin."),
    data_root: DataRoot = None,
    dataset_param: DatasetParam = [],  # noqa: B006  (typer copies a list default)
    trust_pickle: TrustPickle = False,
) -> None:
    """Read every file and check every value (shapes, binary masks, finite intensities); one line of result."""
    _, _, data, _ = _load(dataset, data_root, dataset_param, trust_pickle)
    data.validate(f"dataset '{dataset}'", full=True)
    n, a, h, w = data.masks.shape
    print(f"ok: {dataset}: {n} images, {a} annotators, {h}x{w}, every item read and checked")


@data_app.command()
def convert(
    dataset: str = typer.Argument(..., help="Dataset plugin."),
    output: Path = typer.Option(..., "--output", "-o", help="New folder to write (must not exist or be empty)."),
    data_root: DataRoot = None,
    dataset_param: DatasetParam = [],  # noqa: B006  (typer copies a list default)
    trust_pickle: TrustPickle = False,
    image_dtype: str = typer.Option("float16", "--image-dtype", help="float16 (compact) or float32."),
) -> None:
    """Convert once into plain .npy files (no pickles) that later runs read memory-mapped with
    `--dataset DATASET --data-root OUTPUT`."""
    check_output(output, image_dtype)  # before the data is read
    spec, params, data, notes = _load(dataset, data_root, dataset_param, trust_pickle)
    data.validate(f"dataset '{dataset}'", full=True)
    write_converted(data, output, spec.name, params, source=str(data_root), image_dtype=image_dtype, notes=notes)
    print(f"wrote {output}: {len(data)} images; use --dataset {dataset} --data-root {output}")
