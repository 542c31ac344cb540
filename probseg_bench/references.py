"""Published reference values to show beside measured ones (``probseg-bench leaderboard --reference NAME``).

One reference table per name, shipped as JSON in ``probseg_bench/reference_data/`` and read with
:mod:`importlib.resources` (so an installed wheel and an editable checkout both find it):

* ``paper``: the seed paper's Table II (Valiuddin et al., "Investigating and Improving Latent Density
  Segmentation Models for Aleatoric Uncertainty Quantification in Medical Imaging", IEEE TMI 2024,
  arXiv 2307.16694): EWD and effective rank (ER), mean ± std over 3 folds, for PU-Net, PU-Net+NF and SPU-Net
  ("Ours") on LIDC-IDRI, QUBIQ pancreas and QUBIQ pancreatic lesion at latent dimensions d = 4..7, obtained
  under the paper protocol on the full datasets (16 samples; EWD = 1 - HM-IoU with IoU(empty, empty) = 1).
  Values are kept as printed (strings "mean ± std"), including the paper's "3.522 ± 0.11" for the pancreatic
  lesion, Ours, d = 4.
* ``literature``: the field's LIDC numbers (GED_n and HM-IoU_n at n = 16, 32, 100 samples on the "v1" and "v2"
  splits; CCDM, ICCV 2023, Table 1, and the papers it copies them from) for PU-Net, HPU-Net, PHiSeg, SSN, MoSE,
  CIMD and CCDM, each value with its own source and how far we could check it.

A published cell belongs to a dataset plugin, a preset (the protocol it was obtained under: ``paper``, or the
split presets ``lidc-v1`` / ``lidc-v2``), a model plugin and a latent dimension (None: the model's reference d);
its values are keyed by the suite's metric names (``ewd``, ``er``, ``ged_16``, ``hm_iou_32``, ...), so a
published GED_16 is only ever set beside a measured ``ged_16`` (the same n).

File layouts. ``format`` 1 (``paper``): ``name``, ``title``, ``citation``, ``source`` (where in the publication),
``protocol`` (an object with at least ``summary`` and ``preset``), ``datasets`` and ``models`` (the publication's
names -> this suite's plugin names), ``notes`` (``[{"source", "text"}]``: published numbers that are not table
cells) and ``table``: ``[{"dataset", "model", "values": {"<d>": {"ewd": "m ± s", "er": "m ± s"}}}]`` in the
publication's names. ``format`` 2 (``literature``): the same header, ``splits`` (``{"v1": {"dataset", "preset"}}``),
``sources`` (key -> a full reference) and ``table``: ``[{"method", "split", "values": {"<metric>": {"value":
"0.212" or "m ± s", "source": a key of sources, "status": how it was checked}}}]``; ``models`` maps the
publication's method names to plugin names (a method no plugin provides, e.g. MoSE, is kept and never paired).
"""

from __future__ import annotations

import json
import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

from probseg_bench.errors import ProbsegError, did_you_mean

# reference name -> JSON file in probseg_bench/reference_data/
REFERENCES: dict[str, str] = {"paper": "valiuddin2024_table2.json", "literature": "lidc_literature.json"}
PAPER_METRICS = ("ewd", "er")
_VALUE = re.compile(r"^(\d+\.\d+)(?: ± (\d+\.\d+))?$")
_HEADER = {"format", "name", "title", "citation", "source", "protocol", "models", "notes", "table"}
_KEYS = {1: _HEADER | {"datasets"}, 2: _HEADER | {"splits", "sources"}}


@dataclass(frozen=True)
class PublishedValue:
    """One published number: ``metric`` (a metric name of the suite), ``mean`` and ``std`` (None when the
    publication gives none), ``printed`` (as printed, e.g. ``"0.451 ± 0.001"`` or ``"0.212"``), ``source`` (where
    it comes from) and ``status`` (how far it was checked against that source; empty for a table read whole)."""

    metric: str
    mean: float
    std: float | None
    printed: str
    source: str
    status: str = ""

    @property
    def mean_printed(self) -> str:
        """The mean as printed, e.g. ``"1.68"`` (``"3.522"`` where the publication printed three decimals)."""
        return self.printed.split(" ± ")[0]

    @property
    def decimals(self) -> int:
        """The publication's precision: digits after the point of the printed mean."""
        return len(self.mean_printed.split(".")[1]) if "." in self.mean_printed else 0


@dataclass(frozen=True)
class PublishedCell:
    """The published values of one method under one protocol: ``dataset`` / ``model`` (plugin names), ``preset``
    (the protocol), ``latent_dim`` (None: the model's reference d), ``method`` (the publication's name) and
    ``values`` (metric name -> :class:`PublishedValue`)."""

    dataset: str
    model: str
    preset: str
    latent_dim: int | None
    method: str
    values: Mapping[str, PublishedValue]

    def mean(self, metric: str) -> float | None:
        """The published mean of ``metric``, or None."""
        value = self.values.get(metric)
        return None if value is None else value.mean


@dataclass(frozen=True)
class ReferenceTable:
    """A published table keyed by this suite's (dataset, model, preset, latent dim) names.

    ``name``: the ``--reference`` name; ``title``: a short citation; ``citation``: the full reference(s);
    ``source``: where in the publication (e.g. "Table II"); ``protocol``: how the values were obtained
    (``protocol["summary"]`` one sentence); ``dataset_names`` / ``model_names``: the publication's names (of
    datasets, or of splits in format 2) -> plugin names; ``cells``:
    the published cells; ``notes``: other published numbers that are not table cells; ``sources``: key -> full
    reference of the values' sources (format 2); ``file``: the JSON file read.
    """

    name: str
    title: str
    citation: str
    source: str
    protocol: Mapping[str, Any]
    dataset_names: Mapping[str, str]
    model_names: Mapping[str, str]
    cells: Mapping[tuple[str, str, str, int | None], PublishedCell]
    notes: tuple[str, ...] = ()
    sources: Mapping[str, str] = field(default_factory=dict)
    file: str = field(default="", compare=False)

    def lookup(self, dataset: str, model: str, preset: str, latent_dim: int | None = None) -> PublishedCell | None:
        """The published cell for a dataset plugin, a model plugin, a preset and a latent dimension (a cell
        published for any d, ``latent_dim`` None, answers every d), or None when the publication reports none."""
        cell = self.cells.get((dataset, model, preset, None if latent_dim is None else int(latent_dim)))
        return cell if cell is not None else self.cells.get((dataset, model, preset, None))

    @property
    def metrics(self) -> tuple[str, ...]:
        """The metric names with a published value, in the table's order."""
        return tuple(dict.fromkeys(m for c in self.cells.values() for m in c.values))

    @property
    def datasets(self) -> tuple[str, ...]:
        """The dataset plugin names this table reports, in the publication's order."""
        return tuple(dict.fromkeys(c.dataset for c in self.cells.values()))

    @property
    def models(self) -> tuple[str, ...]:
        """The model plugin names this table reports, in the publication's order."""
        return tuple(dict.fromkeys(c.model for c in self.cells.values()))

    def coverage(self, installed: Collection[str] | None = None) -> str:
        """What the table reports, in plugin names, e.g. "lidc, qubiq-pancreas with punet, spunet at d = 4..7"
        or "lidc under lidc-v1, lidc-crops under lidc-v2 with punet, ... (GED_n, HM-IoU_n)"; with ``installed``
        (the model plugins present), a model not among them reads e.g. "mose (no such model here)"."""
        models = ", ".join(m if installed is None or m in installed else f"{m} (no such model here)"
                           for m in self.models)
        dims = sorted({c.latent_dim for c in self.cells.values() if c.latent_dim is not None})
        if not dims:
            where = ", ".join(dict.fromkeys(f"{c.dataset} under {c.preset}" for c in self.cells.values()))
            return f"{where} with {models}"
        contiguous = len(dims) > 2 and dims == list(range(dims[0], dims[-1] + 1))
        d_text = f"{dims[0]}..{dims[-1]}" if contiguous else ", ".join(map(str, dims))
        return f"{', '.join(self.datasets)} with {models} at d = {d_text}"

    def footnotes(self, shown: list[PublishedCell] | None = None) -> list[str]:
        """Lines for a table that shows these values: where they come from and under which protocol, which
        measured rows are comparable with them, and for a table whose values have their own sources (format 2)
        the source and status of each value in ``shown`` (the cells the table pairs with a row)."""
        presets = ", ".join(f"'{p}'" for p in dict.fromkeys(c.preset for c in self.cells.values()))
        lines = [
            f"{self.name}: published values of {self.title}, {self.source}, obtained under "
            f"{self.protocol['summary']}; Δ = measured − {self.name}",
            f"published values only beside rows of {', '.join(self.datasets)} with default dataset parameters and "
            f"hyperparameters under the preset{'s' if ',' in presets else ''} {presets} (the same split and "
            "sample count n); rows of other presets, variants or datasets are not comparable, nor are runs with "
            "protocol overrides (--epochs); published values are never bold or ranked",
        ]
        if self.sources:
            for cell in shown or ():
                groups: dict[tuple[str, str], list[str]] = {}
                for v in cell.values.values():
                    groups.setdefault((v.source, v.status), []).append(f"{v.metric} {v.printed}")
                parts = [f"{', '.join(values)} [{source}{': ' + status if status else ''}]"
                         for (source, status), values in groups.items()]
                lines.append(f"{self.name}, {cell.method} ({cell.model}) under {cell.preset}: {'; '.join(parts)}")
            lines += [f"[{key}] {text}" for key, text in self.sources.items()
                      if any(v.source == key for c in shown or () for v in c.values.values())]
        return lines


def _parse_value(file: str, where: str, text: Any, with_std: bool = True) -> tuple[float, float | None]:
    match = _VALUE.match(text) if isinstance(text, str) else None
    if match is None or (with_std and match.group(2) is None):
        expected = "'MEAN ± STD' (e.g. '0.451 ± 0.001')" if with_std else "'MEAN' or 'MEAN ± STD' (e.g. '0.212')"
        raise ProbsegError(f"{file}: {where}: expected a string {expected}, got {text!r}")
    return float(match.group(1)), None if match.group(2) is None else float(match.group(2))


def _names(file: str, raw: dict[str, Any], key: str) -> dict[str, str]:
    value = raw.get(key)
    if not isinstance(value, dict) or not value or not all(
            isinstance(k, str) and isinstance(v, str) and v for k, v in value.items()):
        raise ProbsegError(f"{file}: '{key}' must be a non-empty object of publication name -> plugin name")
    return dict(value)


def _check_header(raw: Any, file: str) -> int:
    if not isinstance(raw, dict):
        raise ProbsegError(f"{file}: expected a JSON object at the top level")
    fmt = raw.get("format")
    if fmt not in _KEYS:
        raise ProbsegError(f"{file}: 'format' {fmt!r} is not supported (expected 1 or 2)")
    keys = _KEYS[fmt]
    missing = sorted(keys - set(raw))
    unknown = sorted(set(raw) - keys)
    if missing or unknown:
        what = f"missing key '{missing[0]}'" if missing else f"unknown key '{unknown[0]}'"
        raise ProbsegError(f"{file}: {what}; expected the keys {', '.join(sorted(keys))}")
    for key in ("name", "title", "citation", "source"):
        if not isinstance(raw[key], str) or not raw[key]:
            raise ProbsegError(f"{file}: '{key}' must be a non-empty string")
    protocol = raw["protocol"]
    if not isinstance(protocol, dict) or not isinstance(protocol.get("summary"), str):
        raise ProbsegError(f"{file}: 'protocol' must be an object with a 'summary' string")
    notes = raw["notes"]
    if not isinstance(notes, list) or not all(
            isinstance(n, dict) and isinstance(n.get("source"), str) and isinstance(n.get("text"), str)
            for n in notes):
        raise ProbsegError(f"{file}: 'notes' must be a list of objects with 'source' and 'text' strings")
    if not isinstance(raw["table"], list) or not raw["table"]:
        raise ProbsegError(f"{file}: 'table' must be a non-empty list of rows")
    return int(fmt)


def _table_cells_v1(raw: dict[str, Any], file: str) -> dict[tuple[str, str, str, int | None], PublishedCell]:
    """The cells of a format-1 table (values per latent dimension, EWD and ER, all under one preset)."""
    datasets, models = _names(file, raw, "datasets"), _names(file, raw, "models")
    preset = raw["protocol"].get("preset")
    if not isinstance(preset, str) or not preset:
        raise ProbsegError(f"{file}: 'protocol' must name the 'preset' its values were obtained under")
    cells: dict[tuple[str, str, str, int | None], PublishedCell] = {}
    for i, row in enumerate(raw["table"]):
        where = f"table[{i}]"
        if not isinstance(row, dict) or set(row) != {"dataset", "model", "values"} or not isinstance(
                row["values"], dict):
            raise ProbsegError(f"{file}: {where}: expected an object with 'dataset', 'model' and 'values' (an object)")
        for key, names in (("dataset", datasets), ("model", models)):
            if row[key] not in names:
                raise ProbsegError(f"{file}: {where}: {key} {row[key]!r} is not in '{key}s' "
                                   f"({', '.join(names)}){did_you_mean(str(row[key]), names)}")
        dataset, model = datasets[row["dataset"]], models[row["model"]]
        for d_text, entry in row["values"].items():
            here = f"{where} ({row['dataset']}, {row['model']}, d={d_text})"
            if not d_text.isdigit() or int(d_text) < 1:
                raise ProbsegError(f"{file}: {where}: latent dimension {d_text!r} is not a positive integer")
            if not isinstance(entry, dict) or set(entry) != set(PAPER_METRICS):
                raise ProbsegError(f"{file}: {here}: expected an object with 'ewd' and 'er'")
            key_ = (dataset, model, preset, int(d_text))
            if key_ in cells:
                raise ProbsegError(f"{file}: {here}: this cell is given twice")
            values = {}
            for metric in PAPER_METRICS:
                mean, std = _parse_value(file, f"{here} {metric}", entry[metric])
                values[metric] = PublishedValue(metric, mean, std, entry[metric], raw["source"])
            cells[key_] = PublishedCell(dataset, model, preset, int(d_text), row["model"], values)
    return cells


def _table_cells_v2(raw: dict[str, Any], file: str) -> dict[tuple[str, str, str, int | None], PublishedCell]:
    """The cells of a format-2 table (values per method and split, any metric of the suite, each with its source)."""
    from probseg_bench.metrics.catalogue import find_metric

    models = _names(file, raw, "models")
    splits, sources = raw["splits"], raw["sources"]
    if not isinstance(splits, dict) or not splits or not all(
            isinstance(v, dict) and isinstance(v.get("dataset"), str) and isinstance(v.get("preset"), str)
            for v in splits.values()):
        raise ProbsegError(f"{file}: 'splits' must be an object of split name -> {{'dataset', 'preset'}}")
    if not isinstance(sources, dict) or not all(isinstance(v, str) and v for v in sources.values()):
        raise ProbsegError(f"{file}: 'sources' must be an object of key -> reference text")
    cells: dict[tuple[str, str, str, int | None], PublishedCell] = {}
    for i, row in enumerate(raw["table"]):
        where = f"table[{i}]"
        if not isinstance(row, dict) or set(row) != {"method", "split", "values"} or not isinstance(
                row["values"], dict) or not row["values"]:
            raise ProbsegError(f"{file}: {where}: expected an object with 'method', 'split' and 'values' (a "
                               "non-empty object)")
        for key, names in (("method", models), ("split", splits)):
            if row[key] not in names:
                plural = "models" if key == "method" else "splits"
                raise ProbsegError(f"{file}: {where}: {key} {row[key]!r} is not in '{plural}' "
                                   f"({', '.join(names)}){did_you_mean(str(row[key]), names)}")
        split = splits[row["split"]]
        here = f"{where} ({row['method']}, {row['split']})"
        values = {}
        for metric, entry in row["values"].items():
            if find_metric(metric) is None:
                raise ProbsegError(f"{file}: {here}: {metric!r} is not a metric of the suite (e.g. ged_16, hm_iou_32)")
            if not isinstance(entry, dict) or set(entry) - {"value", "source", "status"} or not {
                    "value", "source"} <= set(entry):
                raise ProbsegError(f"{file}: {here} {metric}: expected an object with 'value', 'source' and "
                                   "optionally 'status'")
            if entry["source"] not in sources:
                raise ProbsegError(f"{file}: {here} {metric}: source {entry['source']!r} is not in 'sources'")
            mean, std = _parse_value(file, f"{here} {metric}", entry["value"], with_std=False)
            values[metric] = PublishedValue(metric, mean, std, entry["value"], entry["source"],
                                            str(entry.get("status", "")))
        key_ = (split["dataset"], models[row["method"]], split["preset"], None)
        if key_ in cells:
            raise ProbsegError(f"{file}: {here}: this cell is given twice")
        cells[key_] = PublishedCell(split["dataset"], models[row["method"]], split["preset"], None, row["method"],
                                    values)
    return cells


def parse_reference(raw: Any, file: str) -> ReferenceTable:
    """Validate and convert the parsed JSON of a reference file (layouts: see the module docstring).

    Raises:
        ProbsegError: a missing or unknown key, a value of the wrong type, a name not in ``datasets`` /
            ``models`` / ``splits`` / ``sources``, a latent dimension that is not a positive integer, a value not
            "MEAN ± STD" (format 1) or "MEAN" / "MEAN ± STD" (format 2), an unknown metric, or a repeated cell;
            the message names ``file`` and the place.
    """
    fmt = _check_header(raw, file)
    cells = _table_cells_v1(raw, file) if fmt == 1 else _table_cells_v2(raw, file)
    return ReferenceTable(
        name=raw["name"], title=raw["title"], citation=raw["citation"], source=raw["source"],
        protocol=raw["protocol"], model_names=_names(file, raw, "models"), cells=cells,
        dataset_names=(_names(file, raw, "datasets") if fmt == 1
                       else {k: v["dataset"] for k, v in raw["splits"].items()}),
        notes=tuple(f"{n['source']}: {n['text']}" for n in raw["notes"]),
        sources=dict(raw.get("sources", {})), file=file,
    )


def load_reference_text(text: str, file: str) -> ReferenceTable:
    """Parse the text of a reference JSON file; ``file`` names it in errors.

    Raises:
        ProbsegError: not valid JSON, or not a valid reference table (see :func:`parse_reference`).
    """
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ProbsegError(f"{file}: not valid JSON ({exc})") from None
    return parse_reference(raw, file)


def get_reference(name: str) -> ReferenceTable:
    """The shipped reference table ``name`` (``paper``: the seed paper's Table II; ``literature``: the field's
    LIDC numbers), read from the package.

    Raises:
        ProbsegError: an unknown name (the message lists the known ones, with a did-you-mean), or a shipped
            file that is missing or malformed (the message names the file).
    """
    if name not in REFERENCES:
        raise ProbsegError(f"unknown reference '{name}'{did_you_mean(name, REFERENCES)}; known references: "
                           f"{', '.join(REFERENCES)}")
    resource = resources.files("probseg_bench").joinpath("reference_data", REFERENCES[name])
    try:
        text = resource.read_text(encoding="utf-8")
    except OSError as exc:
        raise ProbsegError(f"{resource}: cannot read the reference table '{name}' ({exc})") from None
    table = load_reference_text(text, str(resource))
    if table.name != name:
        raise ProbsegError(f"{resource}: 'name' is {table.name!r}, expected {name!r}")
    return table


def get_references(names: list[str] | tuple[str, ...]) -> list[ReferenceTable]:
    """The shipped tables ``names`` in the given order, each once (``--reference paper --reference literature``).

    Raises:
        ProbsegError: see :func:`get_reference`.
    """
    return [get_reference(n) for n in dict.fromkeys(names)]


__all__ = ["REFERENCES", "PublishedCell", "PublishedValue", "ReferenceTable", "get_reference", "get_references",
           "load_reference_text", "parse_reference"]
