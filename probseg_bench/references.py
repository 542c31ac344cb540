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

The JSON file (``format`` 1) holds ``name``, ``title``, ``citation``, ``source`` (where in the publication),
``protocol`` (an object with at least ``summary``), ``datasets`` and ``models`` (the publication's names ->
this suite's plugin names), ``notes`` (``[{"source", "text"}]``: published numbers that are not table cells)
and ``table``: ``[{"dataset", "model", "values": {"<d>": {"ewd": "m ± s", "er": "m ± s"}}}]`` in the
publication's names.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

from probseg_bench.errors import ProbsegError, did_you_mean

# reference name -> JSON file in probseg_bench/reference_data/
REFERENCES: dict[str, str] = {"paper": "valiuddin2024_table2.json"}
REFERENCE_METRICS = ("ewd", "er")
_VALUE = re.compile(r"^(\d+\.\d+) ± (\d+\.\d+)$")
_KEYS = {"format", "name", "title", "citation", "source", "protocol", "datasets", "models", "notes", "table"}


@dataclass(frozen=True)
class ReferenceValue:
    """One published cell: EWD and ER (mean and std over the publication's folds) of a model on a dataset at a
    latent dimension, with the printed text (``ewd_printed`` e.g. ``"0.451 ± 0.001"``, ``er_printed`` e.g.
    ``"1.68 ± 0.07"``) to show the values at the publication's precision."""

    dataset: str
    model: str
    latent_dim: int
    ewd_mean: float
    ewd_std: float
    er_mean: float
    er_std: float
    ewd_printed: str
    er_printed: str

    @property
    def er_mean_printed(self) -> str:
        """The ER mean as printed, e.g. ``"1.68"`` (``"3.522"`` where the publication printed three decimals)."""
        return self.er_printed.split(" ± ")[0]


@dataclass(frozen=True)
class ReferenceTable:
    """A published table of EWD and ER values, keyed by this suite's (dataset, model, latent dim) names.

    ``name``: the ``--reference`` name; ``title``: a short citation (e.g. "Valiuddin et al., IEEE TMI 2024
    (arXiv 2307.16694)"); ``citation``: the full reference; ``source``: where in the publication (e.g. "Table II");
    ``protocol``: how the values were obtained (``protocol["summary"]`` one sentence); ``dataset_names`` /
    ``model_names``: the publication's names -> plugin names; ``notes``: other published numbers that are not
    table cells (e.g. "Section IV: PU-Net on LIDC-IDRI: GED 0.327 ± 0.003 ..."); ``file``: the JSON file read.
    """

    name: str
    title: str
    citation: str
    source: str
    protocol: Mapping[str, Any]
    dataset_names: Mapping[str, str]
    model_names: Mapping[str, str]
    values: Mapping[tuple[str, str, int], ReferenceValue]
    notes: tuple[str, ...] = ()
    file: str = field(default="", compare=False)

    def lookup(self, dataset: str, model: str, latent_dim: int) -> ReferenceValue | None:
        """The published value for a dataset plugin, a model plugin and a latent dimension, or None when the
        publication reports none (another dataset, model or d)."""
        return self.values.get((dataset, model, int(latent_dim)))

    @property
    def datasets(self) -> tuple[str, ...]:
        """The dataset plugin names this table reports, in the publication's order."""
        return tuple(dict.fromkeys(v.dataset for v in self.values.values()))

    @property
    def models(self) -> tuple[str, ...]:
        """The model plugin names this table reports, in the publication's order."""
        return tuple(dict.fromkeys(v.model for v in self.values.values()))

    def coverage(self) -> str:
        """What the table reports, in plugin names, e.g. "lidc, qubiq-pancreas, qubiq-pancreatic-lesion with punet,
        punet-nf, spunet at d = 4..7"."""
        dims = sorted({v.latent_dim for v in self.values.values()})
        contiguous = len(dims) > 2 and dims == list(range(dims[0], dims[-1] + 1))
        d_text = f"{dims[0]}..{dims[-1]}" if contiguous else ", ".join(map(str, dims))
        return f"{', '.join(self.datasets)} with {', '.join(self.models)} at d = {d_text}"

    def footnotes(self) -> list[str]:
        """Two lines for a table that shows these values: where they come from and under which protocol, and
        which measured rows are comparable with them."""
        return [
            f"{self.name}: published values of {self.title}, {self.source}, obtained under "
            f"{self.protocol['summary']}; Δ = measured − {self.name}",
            f"published values only beside rows of {', '.join(self.datasets)} with default dataset parameters and "
            f"hyperparameters under the preset '{self.protocol.get('preset', '')}'; rows of other presets, "
            "variants or datasets are not comparable, nor are runs with protocol overrides (--epochs); published "
            "values are never bold or ranked",
        ]


def _parse_value(file: str, where: str, text: Any) -> tuple[float, float]:
    match = _VALUE.match(text) if isinstance(text, str) else None
    if match is None:
        raise ProbsegError(f"{file}: {where}: expected a string 'MEAN ± STD' (e.g. '0.451 ± 0.001'), got {text!r}")
    return float(match.group(1)), float(match.group(2))


def _names(file: str, raw: dict[str, Any], key: str) -> dict[str, str]:
    value = raw.get(key)
    if not isinstance(value, dict) or not value or not all(
            isinstance(k, str) and isinstance(v, str) and v for k, v in value.items()):
        raise ProbsegError(f"{file}: '{key}' must be a non-empty object of publication name -> plugin name")
    return dict(value)


def parse_reference(raw: Any, file: str) -> ReferenceTable:
    """Validate and convert the parsed JSON of a reference file (layout: see the module docstring).

    Raises:
        ProbsegError: a missing or unknown key, a value of the wrong type, a name not in ``datasets`` /
            ``models``, a latent dimension that is not a positive integer, a value not "MEAN ± STD", or a
            repeated (dataset, model, d) cell; the message names ``file`` and the place.
    """
    if not isinstance(raw, dict):
        raise ProbsegError(f"{file}: expected a JSON object at the top level")
    missing = sorted(_KEYS - set(raw))
    unknown = sorted(set(raw) - _KEYS)
    if missing or unknown:
        what = f"missing key '{missing[0]}'" if missing else f"unknown key '{unknown[0]}'"
        raise ProbsegError(f"{file}: {what}; expected the keys {', '.join(sorted(_KEYS))}")
    if raw["format"] != 1:
        raise ProbsegError(f"{file}: 'format' {raw['format']!r} is not supported (expected 1)")
    for key in ("name", "title", "citation", "source"):
        if not isinstance(raw[key], str) or not raw[key]:
            raise ProbsegError(f"{file}: '{key}' must be a non-empty string")
    protocol = raw["protocol"]
    if not isinstance(protocol, dict) or not isinstance(protocol.get("summary"), str):
        raise ProbsegError(f"{file}: 'protocol' must be an object with a 'summary' string")
    datasets, models = _names(file, raw, "datasets"), _names(file, raw, "models")
    notes = raw["notes"]
    if not isinstance(notes, list) or not all(
            isinstance(n, dict) and isinstance(n.get("source"), str) and isinstance(n.get("text"), str)
            for n in notes):
        raise ProbsegError(f"{file}: 'notes' must be a list of objects with 'source' and 'text' strings")
    table = raw["table"]
    if not isinstance(table, list) or not table:
        raise ProbsegError(f"{file}: 'table' must be a non-empty list of rows")
    values: dict[tuple[str, str, int], ReferenceValue] = {}
    for i, row in enumerate(table):
        where = f"table[{i}]"
        if not isinstance(row, dict) or set(row) != {"dataset", "model", "values"} or not isinstance(
                row["values"], dict):
            raise ProbsegError(f"{file}: {where}: expected an object with 'dataset', 'model' and 'values' (an object)")
        for key, names in (("dataset", datasets), ("model", models)):
            if row[key] not in names:
                raise ProbsegError(f"{file}: {where}: {key} {row[key]!r} is not in '{key}s' "
                                   f"({', '.join(names)}){did_you_mean(str(row[key]), names)}")
        dataset, model = datasets[row["dataset"]], models[row["model"]]
        for d_text, cell in row["values"].items():
            here = f"{where} ({row['dataset']}, {row['model']}, d={d_text})"
            if not d_text.isdigit() or int(d_text) < 1:
                raise ProbsegError(f"{file}: {where}: latent dimension {d_text!r} is not a positive integer")
            if not isinstance(cell, dict) or set(cell) != set(REFERENCE_METRICS):
                raise ProbsegError(f"{file}: {here}: expected an object with 'ewd' and 'er'")
            d = int(d_text)
            if (dataset, model, d) in values:
                raise ProbsegError(f"{file}: {here}: this cell is given twice")
            ewd_mean, ewd_std = _parse_value(file, f"{here} ewd", cell["ewd"])
            er_mean, er_std = _parse_value(file, f"{here} er", cell["er"])
            values[(dataset, model, d)] = ReferenceValue(dataset, model, d, ewd_mean, ewd_std, er_mean, er_std,
                                                         cell["ewd"], cell["er"])
    return ReferenceTable(
        name=raw["name"], title=raw["title"], citation=raw["citation"], source=raw["source"], protocol=protocol,
        dataset_names=datasets, model_names=models, values=values,
        notes=tuple(f"{n['source']}: {n['text']}" for n in notes), file=file,
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
    """The shipped reference table ``name`` (``paper``: the seed paper's Table II), read from the package.

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


__all__ = ["REFERENCES", "ReferenceTable", "ReferenceValue", "get_reference", "load_reference_text",
           "parse_reference"]
