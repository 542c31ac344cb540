"""Published reference values (the seed paper's Table II): the shipped numbers against hand copies of the paper,
the JSON's validation, which leaderboard rows match a published cell, the differences, every output format with
and without --pivot through the CLI, `run --reference/--pivot` and `--epochs` with a grid, and one end-to-end run
of the documented Table II command on tiny real-format data."""

from __future__ import annotations

import csv
import io
import json
import pickle
import shlex
import shutil
import tomllib
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from probseg_bench.cli import app
from probseg_bench.errors import ProbsegError
from probseg_bench.leaderboard import build_leaderboard, render
from probseg_bench.presets import PRESETS
from probseg_bench.published import match_reference, signed
from probseg_bench.references import REFERENCES, get_reference, load_reference_text
from probseg_bench.results import FoldRecord, ResultsStore

REPO = Path(__file__).resolve().parents[1]
DATA_FILE = REPO / "probseg_bench" / "reference_data" / "valiuddin2024_table2.json"
DOCUMENTED = "probseg-bench run --config benchmarks/paper_grid.toml --device cuda --reference paper --pivot"
NO_MATCH = "no published value for these rows: the paper (Table II) reports lidc, qubiq-pancreas, " \
           "qubiq-pancreatic-lesion"


# ------------------------------------------------------------------------------------------- the shipped table
@pytest.mark.parametrize(("dataset", "model", "d", "ewd", "er"), [
    # copied by hand from Table II of arXiv 2307.16694
    ("lidc", "spunet", 6, (0.440, 0.006), (5.12, 0.10)),
    ("lidc", "punet", 4, (0.451, 0.001), (1.68, 0.07)),
    ("lidc", "punet-nf", 7, (0.450, 0.002), (4.00, 0.52)),
    ("qubiq-pancreas", "punet-nf", 5, (0.610, 0.080), (3.15, 0.43)),
    ("qubiq-pancreas", "spunet", 7, (0.536, 0.011), (6.52, 0.18)),
    ("qubiq-pancreatic-lesion", "punet-nf", 7, (0.535, 0.025), (4.88, 0.43)),
    ("qubiq-pancreatic-lesion", "spunet", 4, (0.537, 0.018), (3.522, 0.11)),  # printed with 3 decimals
    ("qubiq-pancreatic-lesion", "spunet", 5, (0.539, 0.000), (4.41, 0.28)),
    ("qubiq-pancreatic-lesion", "punet", 6, (0.618, 0.002), (1.07, 0.02)),
])
def test_shipped_values_are_the_papers(dataset, model, d, ewd, er):
    cell = get_reference("paper").lookup(dataset, model, "paper", d)
    assert cell is not None and cell.latent_dim == d and cell.preset == "paper"
    assert (cell.values["ewd"].mean, cell.values["ewd"].std) == ewd
    assert (cell.values["er"].mean, cell.values["er"].std) == er


def test_all_36_cells_and_the_provenance():
    table = get_reference("paper")
    cells = {(ds, m, d) for ds in ("lidc", "qubiq-pancreas", "qubiq-pancreatic-lesion")
             for m in ("punet", "punet-nf", "spunet") for d in (4, 5, 6, 7)}
    assert {(ds, m, d) for ds, m, _, d in table.cells} == cells and len(table.cells) == 36
    assert {p for _, _, p, _ in table.cells} == {"paper"} and table.metrics == ("ewd", "er")
    assert table.lookup("lidc", "spunet", "paper", 8) is None
    assert table.lookup("lidc-sample", "spunet", "paper", 6) is None
    assert table.lookup("lidc", "spunet", "quick", 6) is None  # another protocol
    assert table.lookup("lidc", "spunet", "paper", 6).values["ewd"].printed == "0.440 ± 0.006"
    lesion = table.lookup("qubiq-pancreatic-lesion", "spunet", "paper", 4).values["er"]
    assert lesion.printed == "3.522 ± 0.11" and lesion.mean_printed == "3.522" and lesion.decimals == 3
    assert table.source == "Table II" and "2307.16694" in table.citation and "Valiuddin" in table.citation
    summary = table.protocol["summary"]
    assert "full datasets" in summary and "16" in summary and "3-fold" in summary
    assert "IoU(empty, empty) = 1" in summary and "1 - HM-IoU" in summary
    assert table.dataset_names == {"LIDC-IDRI": "lidc", "QUBIQ Pancreas": "qubiq-pancreas",
                                   "QUBIQ Pancreatic lesion": "qubiq-pancreatic-lesion"}
    assert table.model_names == {"PU-Net": "punet", "PU-Net+NF": "punet-nf", "Ours": "spunet"}
    ged = [n for n in table.notes if "0.327 ± 0.003" in n]
    assert len(ged) == 1 and "GED" in ged[0] and "PU-Net" in ged[0] and "LIDC" in ged[0]
    assert not any(v.mean == 0.327 for c in table.cells.values() for v in c.values.values())


@pytest.mark.parametrize(("dataset", "best"), [
    # PAPER.md: the best EWD (ER) per dataset and model, at d
    ("lidc", {"punet": (0.450, 1.68, 5), "punet-nf": (0.446, 2.94, 6), "spunet": (0.440, 5.12, 6)}),
    ("qubiq-pancreas", {"punet": (0.589, 1.65, 7), "punet-nf": (0.581, 2.37, 4), "spunet": (0.530, 5.33, 6)}),
    ("qubiq-pancreatic-lesion", {"punet": (0.606, 1.18, 5), "punet-nf": (0.535, 4.88, 7),
                                 "spunet": (0.518, 4.20, 6)}),
])
def test_best_per_dataset_agrees_with_paper_md(dataset, best):
    table = get_reference("paper")
    for model, (ewd, er, d) in best.items():
        values = [table.lookup(dataset, model, "paper", k) for k in (4, 5, 6, 7)]
        lowest = min(values, key=lambda v: v.mean("ewd"))
        assert (lowest.mean("ewd"), lowest.mean("er"), lowest.latent_dim) == (ewd, er, d)
        assert sum(v.mean("ewd") == ewd for v in values) == 1


def test_unknown_reference_name_lists_the_known_ones():
    with pytest.raises(ProbsegError, match=r"unknown reference 'papr' \(did you mean 'paper'\?\); known references: "
                                           r"paper, literature"):
        get_reference("papr")
    assert list(REFERENCES) == ["paper", "literature"]


def _broken(edit) -> str:
    raw = json.loads(DATA_FILE.read_text(encoding="utf-8"))
    edit(raw)
    return json.dumps(raw)


@pytest.mark.parametrize(("text", "message"), [
    ("{not json", "not valid JSON"),
    ("[]", "expected a JSON object"),
    (_broken(lambda r: r.pop("protocol")), "missing key 'protocol'"),
    (_broken(lambda r: r.update(extra=1)), "unknown key 'extra'"),
    (_broken(lambda r: r["table"][0]["values"]["4"].update(ewd="0.451 +- 0.001")),
     r"table\[0\] \(LIDC-IDRI, PU-Net, d=4\) ewd: expected a string 'MEAN ± STD'"),
    (_broken(lambda r: r["table"][0]["values"]["4"].update(er=1.68)), "expected a string 'MEAN ± STD'"),
    (_broken(lambda r: r["table"][1].update(dataset="LIDC")), r"table\[1\]: dataset 'LIDC' is not in 'datasets'"),
    (_broken(lambda r: r["table"][2].update(model="Our")), r"model 'Our' is not in 'models'.*did you mean 'Ours'"),
    (_broken(lambda r: r["table"][0]["values"].update(x={"ewd": "0.1 ± 0.1", "er": "1.0 ± 0.1"})),
     "latent dimension 'x' is not a positive integer"),
    (_broken(lambda r: r["table"].append(r["table"][0])), r"table\[9\] \(LIDC-IDRI, PU-Net, d=4\): this cell is given "
                                                          "twice"),
    (_broken(lambda r: r["table"][0]["values"]["5"].pop("er")), "expected an object with 'ewd' and 'er'"),
    (_broken(lambda r: r.update(notes=["GED 0.327"])), "'notes' must be a list of objects"),
])
def test_a_malformed_reference_file_is_named(text, message):
    with pytest.raises(ProbsegError, match=message) as info:
        load_reference_text(text, "/somewhere/table2.json")
    assert str(info.value).startswith("/somewhere/table2.json: ")


def test_the_json_ships_with_the_package():
    """The file is package data (a wheel carries it) and is read through importlib.resources."""
    config = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert "reference_data/*.json" in config["tool"]["setuptools"]["package-data"]["probseg_bench"]
    assert Path(get_reference("paper").file).name == DATA_FILE.name
    assert DATA_FILE.match("probseg_bench/reference_data/*.json")


# ----------------------------------------------------------------------------------------------- matching rows
def fold_record(model: str, fold: int, ewd: float, er: float, d: int = 4, dataset: str = "lidc",
                variant: str = "", params: dict | None = None, preset: str = "paper",
                config: str | None = None) -> FoldRecord:
    """A fabricated fold record (no training): 4 test images whose EWD average to ``ewd``."""
    per_image = [ewd - 0.01, ewd + 0.01, ewd - 0.02, ewd + 0.02]
    return FoldRecord(
        model=model, dataset=dataset, latent_dim=d, fold=fold, seed=0, preset=preset,
        config_hash=config or f"{model}-{variant}-{json.dumps(params)}", split_hash=f"split-{dataset}",
        hyperparameters={}, protocol={"epochs": 200}, variant=variant, dataset_params=params or {},
        metrics={"ged": ewd / 2, "hm_iou": 1 - ewd, "ewd": ewd, "er": er},
        per_image={"ewd": per_image, "hm_iou": [1 - e for e in per_image]}, test_ids=["a", "b", "c", "d"],
        timings={"train_s": 1.0}, versions={},
    )


def three_folds(model: str, ewds: tuple[float, ...], ers: tuple[float, ...], **kwargs) -> list[FoldRecord]:
    return [fold_record(model, f, e, r, **kwargs) for f, (e, r) in enumerate(zip(ewds, ers, strict=True))]


def test_which_rows_match_a_published_value():
    paper = get_reference("paper")
    recs = [
        *three_folds("punet", (0.46, 0.47, 0.48), (1.5, 1.6, 1.7)),  # lidc d=4, defaults: matches
        *three_folds("spunet", (0.5, 0.5, 0.5), (4.0, 4.0, 4.0), variant="regularizer=mmd"),  # a variant
        *three_folds("spunet", (0.6, 0.6, 0.6), (4.0, 4.0, 4.0), dataset="qubiq-pancreas", params={"crop": "center"}),
        *three_folds("punet", (0.6, 0.6, 0.6), (1.0, 1.0, 1.0), dataset="qubiq-pancreas",
                     params={"task": 1, "crop": "roi", "size": 128}),  # the defaults, stated: matches
        *three_folds("punet", (0.7, 0.7, 0.7), (1.2, 1.2, 1.2), dataset="lidc-sample", d=6),  # not in the paper
        *three_folds("punet", (0.5, 0.5, 0.5), (1.2, 1.2, 1.2), d=8),  # the paper has d = 4..7
        *three_folds("other-model", (0.5, 0.5, 0.5), (1.2, 1.2, 1.2)),
        *three_folds("punet-nf", (0.5, 0.5, 0.5), (1.2, 1.2, 1.2), preset="quick"),  # another protocol
    ]
    matched = {(r.dataset_label, r.label, r.latent_dim): match_reference(r, paper) for r in build_leaderboard(recs)}
    assert matched[("lidc", "punet", 4)] == paper.lookup("lidc", "punet", "paper", 4)
    assert matched[("qubiq-pancreas", "punet", 4)] == paper.lookup("qubiq-pancreas", "punet", "paper", 4)
    assert matched[("lidc", "spunet (regularizer=mmd)", 4)] is None
    assert matched[("qubiq-pancreas (crop=center)", "spunet", 4)] is None
    assert matched[("lidc-sample", "punet", 6)] is None
    assert matched[("lidc", "punet", 8)] is None and matched[("lidc", "other-model", 4)] is None
    assert matched[("lidc", "punet-nf", 4)] is None
    assert all(match_reference(r, None) is None for r in build_leaderboard(recs))


def test_delta_is_measured_minus_published_by_hand():
    recs = three_folds("punet", (0.46, 0.47, 0.48), (1.5, 1.6, 1.7))  # mean EWD 0.47, ER 1.6
    recs += three_folds("spunet", (0.42, 0.43, 0.44), (3.6, 3.7, 3.8))  # mean EWD 0.43, ER 3.7
    rows = build_leaderboard(recs)
    out = {r["model"]: r for r in json.loads(render(rows, "json", references=[get_reference("paper")]))}
    # lidc d=4: punet 0.451 ± 0.001, ER 1.68 ± 0.07; spunet 0.447 ± 0.005, ER 3.52 ± 0.04
    assert out["punet"]["delta_ewd"] == pytest.approx(0.47 - 0.451) and out["punet"]["delta_ewd"] > 0
    assert out["punet"]["delta_er"] == pytest.approx(1.6 - 1.68) and out["punet"]["delta_er"] < 0
    assert out["spunet"]["delta_ewd"] == pytest.approx(-0.017) and out["spunet"]["delta_er"] == pytest.approx(0.18)
    assert out["punet"]["reference"] == {"name": "paper", "ewd_mean": 0.451, "ewd_std": 0.001, "er_mean": 1.68,
                                         "er_std": 0.07, "ewd_source": "Table II", "er_source": "Table II"}
    md = render(rows, "markdown", references=[get_reference("paper")])
    assert "| 0.470 ± 0.010 | 0.451 ± 0.001 | +0.019 | 1.600 ± 0.100 | 1.68 ± 0.07 | −0.08 |" in md
    assert "| **0.430 ± 0.010** | 0.447 ± 0.005 | −0.017 | **3.700 ± 0.100** | 3.52 ± 0.04 | +0.18 |" in md
    assert (signed(0.0191, 3), signed(-0.0804, 2), signed(-0.0001, 3), signed(0.0, 2)) == (
        "+0.019", "−0.08", "+0.000", "+0.00")


# ------------------------------------------------------------------------------------------- the CLI, formats
@pytest.fixture
def store(tmp_path) -> str:
    """A results store with fabricated folds: lidc d=4 and d=6 of the three models, a variant, a dataset with a
    non-default parameter and a lidc-sample row. The paper's values at lidc d=4 are better than the measured
    ones, yet the bold marks stay on the measured rows."""
    path = str(tmp_path / "results.db")
    s = ResultsStore(path)
    recs = [
        *three_folds("punet", (0.46, 0.47, 0.48), (1.5, 1.6, 1.7)),
        *three_folds("punet-nf", (0.47, 0.47, 0.47), (2.0, 2.1, 2.2)),
        *three_folds("spunet", (0.45, 0.46, 0.47), (3.0, 3.1, 3.2)),
        *three_folds("spunet", (0.45, 0.44, 0.43), (5.0, 5.1, 5.2), d=6),
        *three_folds("spunet", (0.50, 0.50, 0.50), (4.0, 4.0, 4.0), d=6, variant="regularizer=mmd"),
        *three_folds("punet", (0.6, 0.61, 0.62), (1.4, 1.4, 1.4), dataset="qubiq-pancreas", params={"crop": "center"}),
        *three_folds("punet", (0.7, 0.7, 0.7), (1.2, 1.2, 1.2), dataset="lidc-sample", d=6, preset="quick"),
    ]
    for r in recs:
        s.add(r)
    return path


def leaderboard(store: str, *args: str):
    result = CliRunner().invoke(app, ["leaderboard", "--storage", store, *args])
    assert result.exit_code == 0, result.output
    return result


def cells_of(text: str, separator: str = "|") -> list[list[str]]:
    """The cells of a markdown table (``|``) or of a rich table (``│``; its header row's ``┃`` too)."""
    if separator == "│":
        text = text.replace("┃", "│")
    return [[c.strip() for c in line.strip().strip(separator).split(separator)] for line in text.splitlines()
            if line.strip().startswith(separator)]


def test_standard_layout_in_every_format(store):
    table = leaderboard(store, "--reference", "paper").stdout
    assert "EWD (paper)" in table and "Δ EWD" in table and "ER (paper)" in table and "Δ ER" in table
    assert cells_of(table, "│")[0][9:15] == ["EWD ↓", "EWD (paper)", "Δ EWD", "ER ↑", "ER (paper)", "Δ ER"]
    punet = next(c for c in cells_of(table, "│") if c[:3] == ["lidc", "punet", "4"])
    assert punet[9:15] == ["0.470 ± 0.010", "0.451 ± 0.001", "+0.019", "1.600 ± 0.100", "1.68 ± 0.07", "−0.08"]
    assert "Table II" in table and "full datasets" in table and "not comparable" in table

    md = cells_of(leaderboard(store, "--reference", "paper", "--format", "markdown").stdout)
    assert md[0][9:15] == ["EWD ↓", "EWD (paper)", "Δ EWD", "ER ↑", "ER (paper)", "Δ ER"]
    rows = {(c[0], c[1], c[2]): c for c in md[2:]}
    assert rows[("lidc", "spunet", "6")][9:15] == ["**0.440 ± 0.010**", "0.440 ± 0.006", "+0.000",
                                                    "**5.100 ± 0.100**", "5.12 ± 0.10", "−0.02"]
    for key in (("lidc", "spunet (regularizer=mmd)", "6"), ("lidc-sample", "punet", "6"),
                ("qubiq-pancreas (crop=center)", "punet", "4")):
        assert rows[key][10:12] == ["", ""] and rows[key][13:15] == ["", ""]
    assert not any("**" in c for row in md[2:] for c in (row[10], row[11], row[13], row[14]))

    out = leaderboard(store, "--reference", "paper", "--format", "json")
    objs = {(o["dataset_label"], o["model"], o["variant"], o["latent_dim"]): o for o in json.loads(out.stdout)}
    assert objs[("lidc", "punet-nf", "", 4)]["reference"] == {
        "name": "paper", "ewd_mean": 0.451, "ewd_std": 0.004, "er_mean": 2.9, "er_std": 0.39, "ewd_source": "Table II",
        "er_source": "Table II"}
    assert objs[("lidc", "punet-nf", "", 4)]["delta_ewd"] == pytest.approx(0.019)
    unmatched = [objs[("lidc", "spunet", "regularizer=mmd", 6)], objs[("lidc-sample", "punet", "", 6)],
                 objs[("qubiq-pancreas (crop=center)", "punet", "", 4)]]
    assert all(o["reference"] is None and o["delta_ewd"] is None and o["delta_er"] is None for o in unmatched)
    assert out.stderr == ""  # some rows match: no note

    rows_csv = list(csv.DictReader(io.StringIO(leaderboard(store, "--reference", "paper", "--format", "csv").stdout)))
    spunet = next(r for r in rows_csv if (r["model"], r["latent_dim"], r["variant"]) == ("spunet", "4", ""))
    assert (spunet["reference_name"], float(spunet["reference_ewd_mean"]), float(spunet["reference_er_std"])) == (
        "paper", 0.447, 0.04)
    assert float(spunet["delta_ewd"]) == pytest.approx(0.013) and float(spunet["delta_er"]) == pytest.approx(-0.42)
    variant = next(r for r in rows_csv if r["variant"])
    assert variant["reference_name"] == variant["delta_ewd"] == ""

    latex = leaderboard(store, "--reference", "paper", "--format", "latex").stdout
    assert "EWD (paper) & $\\Delta$ EWD" in latex and "0.451 $\\pm$ 0.001 & +0.019" in latex and "$-$0.08" in latex
    assert latex.count("\\begin{tabular}") == 1 and "% paper: published values of Valiuddin et al." in latex
    body = [line for line in latex.splitlines() if line.endswith("\\\\")]
    assert all(line.count(" & ") == body[0].count(" & ") for line in body)


def test_pivot_in_every_format(store):
    table = cells_of(leaderboard(store, "--reference", "paper", "--pivot").stdout, "│")
    assert table[0] == ["dataset", "model", "preset", "d=4", "d=6"]
    labels = [(c[0], c[1]) for c in table[1:]]
    assert labels[:3] == [("lidc", "punet"), ("lidc", "punet — paper (Table II)"),
                          ("lidc", "punet — Δ (measured − paper)")]
    assert table[2][2:] == ["paper", "0.451 ± 0.001 (1.68)", ""] and table[3][2:] == ["paper", "+0.019 (−0.08)", ""]
    spunet = table[labels.index(("lidc", "spunet — paper (Table II)")) + 1]
    assert spunet[3:] == ["0.447 ± 0.005 (3.52)", "0.440 ± 0.006 (5.12)"]
    assert ("lidc", "spunet (regularizer=mmd) — paper (Table II)") not in labels
    assert not any("paper (Table II)" in m for d, m in labels if d != "lidc")

    md = leaderboard(store, "--reference", "paper", "--pivot", "--format", "markdown").stdout
    assert "| lidc | punet-nf — paper (Table II) | paper | 0.451 ± 0.004 (2.90) |  |" in md
    assert "| lidc | punet-nf — Δ (measured − paper) | paper | +0.019 (−0.80) |  |" in md
    assert "| lidc | spunet | paper | 0.460 ± 0.010 (3.10) | **0.440 ± 0.010 (5.10)** |" in md
    assert not any("**" in line for line in md.splitlines() if "— " in line)  # published: never bold
    notes = [line for line in md.splitlines() if line and not line.startswith("|")]
    assert len(notes) == 2 and "Table II" in notes[0] and "full datasets" in notes[0] and "not comparable" in notes[1]

    latex = leaderboard(store, "--reference", "paper", "--pivot", "--format", "latex").stdout
    assert "lidc & punet --- paper (Table II) & paper & 0.451 $\\pm$ 0.001 (1.68) &  \\\\" in latex
    assert "lidc & punet --- $\\Delta$ (measured $-$ paper) & paper & +0.019 ($-$0.08) &  \\\\" in latex

    flat = json.loads(leaderboard(store, "--reference", "paper", "--pivot", "--format", "json").stdout)
    spunet = next(e for e in flat if (e["dataset"], e["model"]) == ("lidc", "spunet"))
    assert (spunet["paper_ewd_mean_d6"], spunet["paper_ewd_std_d6"], spunet["paper_er_mean_d6"]) == (0.44, 0.006, 5.12)
    assert spunet["delta_ewd_d6"] == pytest.approx(0.0) and spunet["delta_er_d6"] == pytest.approx(-0.02)
    assert spunet["delta_ewd_d4"] == pytest.approx(0.013)
    assert all(len(e) == 3 + 8 * (sum(k.startswith("ewd_mean_d") for k in e)) for e in flat)
    variant = next(e for e in flat if e["model"] == "spunet (regularizer=mmd)")
    assert variant["paper_ewd_mean_d6"] is None and variant["delta_er_d6"] is None

    rows_csv = list(csv.DictReader(io.StringIO(
        leaderboard(store, "--reference", "paper", "--pivot", "--format", "csv").stdout)))
    punet = next(r for r in rows_csv if (r["dataset"], r["model"]) == ("lidc", "punet"))
    assert float(punet["paper_ewd_mean_d4"]) == 0.451 and float(punet["delta_er_d4"]) == pytest.approx(-0.08)
    assert punet["paper_ewd_mean_d6"] == ""


def test_without_reference_no_published_value_appears(store):
    for fmt in ("table", "markdown", "csv", "json", "latex"):
        for pivot in ([], ["--pivot"]):
            out = leaderboard(store, "--format", fmt, *pivot)
            for text in ("(paper)", "paper (Table II)", "Δ", "reference", "paper_", "delta", "0.451", "Valiuddin"):
                assert text not in out.stdout
            assert out.stderr == ""


@pytest.mark.parametrize("fmt", ["table", "markdown", "csv", "json", "latex"])
@pytest.mark.parametrize("pivot", [False, True])
def test_no_matching_row_says_so_in_one_line(store, fmt, pivot):
    out = leaderboard(store, "--reference", "paper", "--dataset", "lidc-sample", "--format", fmt,
                      *(["--pivot"] if pivot else []))
    machine = fmt in ("csv", "json", "latex")
    stream, other = (out.stderr, out.stdout) if machine else (out.stdout, out.stderr)
    assert stream.count(NO_MATCH) == 1 and NO_MATCH not in other and other.count("no published value") == 0
    if machine:
        assert len(out.stderr.strip().splitlines()) == 1
    if fmt == "json":
        assert json.loads(out.stdout)[0]["dataset"] == "lidc-sample"
    if fmt == "csv":
        assert next(csv.DictReader(io.StringIO(out.stdout)))["dataset"] == "lidc-sample"


@pytest.mark.parametrize("args", [
    ["leaderboard", "--reference", "papr"],
    ["leaderboard", "--reference", "table2", "--pivot", "--format", "json"],
    ["run", "--model", "punet", "--dataset", "lidc-sample", "--reference", "papr"],  # refused before training
])
def test_unknown_reference_exits_2_with_one_line(monkeypatch, run_main, tmp_path, args):
    monkeypatch.chdir(tmp_path)
    code, out, err = run_main(*args)
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    name = args[args.index("--reference") + 1]
    assert f"error: unknown reference '{name}'" in err and "known references: paper" in err
    assert not (tmp_path / "probseg-runs").exists()


# --------------------------------------------------------------------------------- run: --reference, --epochs
GRID = """
models = ["punet", "spunet"]
datasets = ["lidc"]
latent_dims = [4]
folds = [0, 1]
device = "auto"
[protocol]
epochs = 2
batch_size = 4
"""


def fake_records(request) -> list[FoldRecord]:
    """Stand-ins for trained folds: EWD 0.5 / ER 2.0 for punet, 0.45 / 3.0 otherwise."""
    ewd, er = (0.5, 2.0) if request.model == "punet" else (0.45, 3.0)
    return [fold_record(request.model, f, ewd + f / 100, er, d=d, dataset=request.dataset)
            for d in request.latent_dims for f in request.folds]


def test_run_grid_applies_epochs_and_device_and_prints_the_reference(monkeypatch, tmp_path):
    seen = []

    def fake_protocol(checked, store, reporter=None, retry_failed=False):
        seen.append(checked.request)
        return fake_records(checked.request)

    monkeypatch.setattr("probseg_bench.cli.run.run_protocol", fake_protocol)
    (tmp_path / "grid.toml").write_text(GRID)
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["run", "--config", "grid.toml", "--epochs", "3", "--device", "cpu",
                                      "--reference", "paper", "--pivot", "--format", "markdown"])
    assert result.exit_code == 0, result.output
    assert [(r.model, dict(r.protocol_overrides), r.device) for r in seen] == [
        ("punet", {"epochs": 3, "batch_size": 4}, "cpu"), ("spunet", {"epochs": 3, "batch_size": 4}, "cpu")]
    assert "| lidc | punet — paper (Table II) | paper | 0.451 ± 0.001 (1.68) |" in result.stdout
    assert "| lidc | punet — Δ (measured − paper) | paper | +0.054 (+0.32) |" in result.stdout
    seen.clear()
    plain = CliRunner().invoke(app, ["run", "--config", "grid.toml", "--format", "json"])
    assert plain.exit_code == 0 and "reference" not in plain.stdout
    assert [(dict(r.protocol_overrides), r.device) for r in seen] == [({"epochs": 2, "batch_size": 4}, "auto")] * 2


def test_run_distributed_path_prints_the_reference_pivot(monkeypatch, tmp_path):
    from probseg_bench import executors

    seen = []

    def fake_local(requests, storage, jobs=1, on_result=None, retry_failed=False):
        results = []
        for r in requests:
            seen.append(r)
            result = executors.CellResult(r, [asdict(rec) for rec in fake_records(r)])
            if on_result:
                on_result(result)
            results.append(result)
        return results

    monkeypatch.setattr(executors.local, "run_local", fake_local)
    (tmp_path / "grid.toml").write_text(GRID)
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["run", "--config", "grid.toml", "--jobs", "2", "--epochs", "5",
                                      "--reference", "paper", "--pivot", "--format", "json"])
    assert result.exit_code == 0, result.output
    assert len(seen) == 4 and all(r.protocol_overrides["epochs"] == 5 for r in seen)
    flat = {e["model"]: e for e in json.loads(result.stdout)}
    assert flat["spunet"]["paper_ewd_mean_d4"] == 0.447 and flat["spunet"]["delta_ewd_d4"] == pytest.approx(0.008)
    table = CliRunner().invoke(app, ["run", "--config", "grid.toml", "--jobs", "2", "--reference", "paper"])
    assert table.exit_code == 0 and "EWD (paper)" in table.stdout and "0.447 ± 0.005" in table.stdout


# ---------------------------------------------------------------------------- the documented command, end to end
PUBLISHED_D4 = {  # Table II, d = 4, "EWD ± std (ER)", copied by hand
    ("lidc", "punet"): "0.451 ± 0.001 (1.68)", ("lidc", "punet-nf"): "0.451 ± 0.004 (2.90)",
    ("lidc", "spunet"): "0.447 ± 0.005 (3.52)",
    ("qubiq-pancreas", "punet"): "0.602 ± 0.034 (1.76)", ("qubiq-pancreas", "punet-nf"): "0.581 ± 0.004 (2.37)",
    ("qubiq-pancreas", "spunet"): "0.541 ± 0.011 (3.44)",
    ("qubiq-pancreatic-lesion", "punet"): "0.628 ± 0.009 (1.25)",
    ("qubiq-pancreatic-lesion", "punet-nf"): "0.536 ± 0.024 (2.54)",
    ("qubiq-pancreatic-lesion", "spunet"): "0.537 ± 0.018 (3.522)",
}


def write_tiny_lidc(root: Path, source: Path) -> None:
    """15 LIDC crops (32 x 32, 4 annotators, 5 series of 3) in the PU-Net port's pickle format, converted with
    `data convert` into ``root`` as the documentation says (docs/published.md)."""
    rng = np.random.default_rng(0)
    entries = {}
    for i in range(15):
        masks = []
        for a in range(4):
            mask = np.zeros((32, 32), np.uint8)
            mask[12 : 17 + a % 2, 12 : 19 - a % 3] = 1
            masks.append(mask)
        entries[f"{i:04d}.png"] = {"image": rng.random((32, 32), dtype=np.float32), "masks": masks,
                                   "series_uid": f"1.3.6.1.{i // 3}"}
    source.mkdir(parents=True)
    (source / "data_lidc.pickle").write_bytes(pickle.dumps(entries))
    done = CliRunner().invoke(app, ["data", "convert", "lidc", "--data-root", str(source), "--trust-pickle",
                                    "--output", str(root)])
    assert done.exit_code == 0, done.output


def write_tiny_qubiq(root: Path) -> None:
    """QUBIQ 2021 layout: <root>/{pancreas,pancreatic-lesion}/Training/caseNN/image.nii.gz + task01_seg0{1,2}.nii.gz,
    5 cases of 40 x 40 x 3 CT (HU, int16) with 2 annotated slices each (10 slices, 5 groups)."""
    import nibabel as nib

    rng = np.random.default_rng(1)
    for task in ("pancreas", "pancreatic-lesion"):
        for case in range(1, 6):
            folder = root / task / "Training" / f"case{case:02d}"
            folder.mkdir(parents=True)
            image = rng.integers(-300, 400, (40, 40, 3)).astype(np.int16)
            nib.save(nib.Nifti1Image(image, np.eye(4)), str(folder / "image.nii.gz"))
            for annotator in (1, 2):
                mask = np.zeros((40, 40, 3), np.uint8)
                mask[10 : 18 + annotator, 15:22, :2] = 1
                nib.save(nib.Nifti1Image(mask, np.eye(4)), str(folder / f"task01_seg{annotator:02d}.nii.gz"))


def test_documented_table_ii_command_end_to_end_on_cpu(monkeypatch, tmp_path):
    """The documented one command (docs/published.md), on tiny data in the real formats where the grid expects them
    (../data next to benchmarks/), with --device cpu and --epochs 1; 9 trainings of one epoch (~20 s on one thread)."""
    documented = (REPO / "docs" / "published.md").read_text()
    assert DOCUMENTED in documented and DOCUMENTED in (REPO / "benchmarks" / "paper_grid.toml").read_text()
    (tmp_path / "benchmarks").mkdir()
    shutil.copy(REPO / "benchmarks" / "paper_grid.toml", tmp_path / "benchmarks" / "paper_grid.toml")
    grid = tmp_path / "benchmarks" / "paper_grid.toml"
    # run has no option that selects latent dims or folds of a grid: trim the copy to d = 4, fold 0 (9 cells)
    text = grid.read_text()
    assert "latent_dims = [4, 5, 6, 7]" in text and "folds = [0, 1, 2]" in text
    grid.write_text(text.replace("latent_dims = [4, 5, 6, 7]", "latent_dims = [4]").replace(
        "folds = [0, 1, 2]", "folds = [0]"))
    write_tiny_lidc(tmp_path / "data" / "lidc-converted", tmp_path / "lidc-pickles")
    write_tiny_qubiq(tmp_path / "data" / "qubiq2021")
    monkeypatch.chdir(tmp_path)

    args = shlex.split(DOCUMENTED)[1:]
    args[args.index("--device") + 1] = "cpu"
    # --epochs 1 would make the rows "epochs=1" variants, which are rightly never paired with a published value:
    # shorten the paper preset itself so that the rows stay comparable
    monkeypatch.setitem(PRESETS, "paper", replace(PRESETS["paper"], epochs=1))
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output

    records = ResultsStore().records()
    assert len(records) == 9 and {r.protocol["epochs"] for r in records} == {1}
    assert {r.preset for r in records} == {"paper"} and {r.variant for r in records} == {""}
    assert {r.versions["device"] for r in records} == {"cpu"}
    rows = cells_of(result.stdout, "│")
    assert rows[0] == ["dataset", "model", "preset", "d=4"]
    by_label = {(c[0], c[1]): c for c in rows[1:]}
    assert len(by_label) == 27
    for (dataset, model), published in PUBLISHED_D4.items():
        measured = by_label[(dataset, model)]
        assert measured[2] == "paper" and "(" in measured[3]
        assert by_label[(dataset, f"{model} — paper (Table II)")][2:] == ["paper", published]
        delta = by_label[(dataset, f"{model} — Δ (measured − paper)")][3].split()[0]
        expected = float(measured[3].split()[0]) - float(published.split()[0])  # the shown (rounded) measured EWD
        assert delta[0] in "+−" and abs(float(delta.replace("−", "-")) - expected) <= 0.0011
    assert "Table II" in result.stdout and NO_MATCH not in result.stdout


# ---------------------------------------------------------------------------------------------- the literature
def literature_record(model: str, fold: int, ged16: float, *, preset: str = "lidc-v1", dataset: str = "lidc",
                      d: int = 6, variant: str = "", counts: tuple[int, ...] = (16, 32, 100),
                      config: str | None = None) -> FoldRecord:
    """A fabricated fold under a literature preset: GED_n = ged16 - n / 1000, HM-IoU_n = 1 - GED_n, 4 test images."""
    metrics = {"ged": ged16, "hm_iou": 0.6, "ewd": 0.4, "er": None}
    per_image = {k: [v] * 4 for k, v in metrics.items() if v is not None}
    for n in counts:
        metrics[f"ged_{n}"] = ged16 - n / 1000
        metrics[f"hm_iou_{n}"] = 1 - (ged16 - n / 1000)
        per_image[f"ged_{n}"] = [ged16 - n / 1000 + e for e in (-0.01, 0.01, -0.02, 0.02)]
    return FoldRecord(
        model=model, dataset=dataset, latent_dim=d, fold=fold, seed=0, preset=preset,
        config_hash=config or f"{model}-{preset}-{dataset}-{d}-{variant}-{counts}", split_hash=f"split-{preset}",
        hyperparameters={}, protocol={"n_folds": 3}, variant=variant, metrics=metrics, per_image=per_image,
        test_ids=["a", "b", "c", "d"], timings={"sampling_s": 8.0, "samples_per_image": max(counts or (16,))},
        versions={},
    )


def test_literature_pairs_a_row_only_at_its_dataset_split_n_and_model():
    """A v1 punet row gets the v1 PU-Net values at the same n; a row of another split (lidc-crops under lidc-v1),
    another preset (paper), another d, with an override, or without the measured n gets none."""
    literature = get_reference("literature")
    recs = [
        *[literature_record("punet", f, 0.30 + f / 100) for f in range(3)],  # v1: pairs
        *[literature_record("punet", f, 0.31, dataset="lidc-crops") for f in range(3)],  # v1 procedure, v2 data
        *[literature_record("punet", f, 0.31, dataset="lidc-crops", preset="lidc-v2") for f in range(3)],  # v2
        *[literature_record("punet", f, 0.31, preset="paper", counts=()) for f in range(3)],  # another preset
        *[literature_record("punet", f, 0.31, d=4) for f in range(3)],  # not the reference d
        *[literature_record("punet", f, 0.31, variant="epochs=2") for f in range(3)],  # an override
        *[literature_record("ssn", f, 0.25, counts=(16,)) for f in range(3)],  # only n = 16 measured
        *[literature_record("spunet", f, 0.29) for f in range(3)],  # no published value
    ]
    rows = {(r.dataset, r.preset, r.label, r.latent_dim): r for r in build_leaderboard(recs)}
    v1 = rows[("lidc", "lidc-v1", "punet", 6)]
    assert match_reference(v1, literature) is literature.lookup("lidc", "punet", "lidc-v1")
    assert match_reference(rows[("lidc-crops", "lidc-v2", "punet", 6)], literature).values["ged_16"].mean == 0.320
    for key in (("lidc-crops", "lidc-v1", "punet", 6), ("lidc", "paper", "punet", 6), ("lidc", "lidc-v1", "punet", 4),
                ("lidc", "lidc-v1", "punet (epochs=2)", 6), ("lidc", "lidc-v1", "spunet", 6)):
        assert match_reference(rows[key], literature) is None, key
    out = {(o["dataset"], o["preset"], o["label"], o["latent_dim"]): o
           for o in json.loads(render(list(rows.values()), "json", references=[literature]))}
    punet = out[("lidc", "lidc-v1", "punet", 6)]
    assert punet["ged_16_mean"] == pytest.approx(0.31 - 0.016) and punet["ged_100_mean"] == pytest.approx(0.31 - 0.1)
    assert punet["reference"]["ged_16_mean"] == 0.310 and punet["reference"]["ged_100_mean"] == 0.252
    assert punet["reference"]["ged_16_source"] == "ccdm-table1"
    assert punet["delta_ged_16"] == pytest.approx(0.31 - 0.016 - 0.310)
    assert punet["delta_hm_iou_32"] == pytest.approx((1 - 0.31 + 0.032) - 0.548)
    ssn = out[("lidc", "lidc-v1", "ssn", 6)]
    assert ssn["delta_ged_16"] == pytest.approx(0.25 - 0.016 - 0.259)
    assert ssn["delta_ged_100"] is None and "ged_100_mean" not in ssn["reference"]  # no measured GED_100
    for key in (("lidc", "paper", "punet", 6), ("lidc", "lidc-v1", "punet (epochs=2)", 6)):
        assert out[key]["reference"] is None and out[key]["delta_ged_16"] is None
    v2 = out[("lidc-crops", "lidc-v2", "punet", 6)]
    assert v2["reference"]["ged_16_mean"] == 0.320 and v2["delta_ged_32"] is None  # v2 publishes no GED_32


def literature_store(tmp_path) -> str:
    path = str(tmp_path / "lit.db")
    store = ResultsStore(path)
    for f in range(3):
        store.add(literature_record("punet", f, 0.30 + f / 100))
        store.add(literature_record("ccdm", f, 0.22))
        store.add(literature_record("punet", f, 0.31, preset="paper", counts=()))
    return path


def test_literature_in_every_format_and_the_pivot(tmp_path):
    store = literature_store(tmp_path)
    table = leaderboard(store, "--reference", "literature").stdout
    header = cells_of(table, "│")[0]
    for label in ("GED_16 ↓", "GED_16 (literature)", "Δ GED_16", "HM-IoU_32 (literature)", "GED_100 ↓",
                  "sampling s/image"):
        assert label in header
    assert "CCDM Table 1" in table and "not checked against the original paper" in table
    md = leaderboard(store, "--reference", "literature", "--format", "markdown").stdout
    rows = {(c[0], c[1], c[3]): dict(zip(cells_of(md)[0], c, strict=True)) for c in cells_of(md)[2:]}
    ccdm = rows[("lidc", "ccdm", "lidc-v1")]
    assert ccdm["GED_16 (literature)"] == "0.212" and ccdm["Δ GED_16"] == "−0.008"  # 0.204 - 0.212
    assert ccdm["GED_100 (literature)"] == "0.183" and ccdm["sampling s/image"] == "2 (n=100)"  # 8 s / 4 images
    assert ccdm["GED_16 ↓"] == "**0.204 ± 0.000**"  # the best measured row; published values never bold
    paper_row = rows[("lidc", "punet", "paper")]
    assert paper_row["GED_16 (literature)"] == "" and paper_row["GED_16 ↓"] == ""
    notes = [line for line in md.splitlines() if line.startswith("literature, ")]
    assert [n.split(":")[0] for n in notes] == ["literature, CCDM (ccdm) under lidc-v1",
                                              "literature, PU-Net (punet) under lidc-v1"]
    assert "ged_100 0.252 [ccdm-table1: as reported in CCDM Table 1; not checked against the original paper; " \
           "doubtful provenance" in notes[1]
    latex = leaderboard(store, "--reference", "literature", "--format", "latex").stdout
    assert "GED\\_16 (literature) & $\\Delta$ GED\\_16" in latex
    flat = list(csv.DictReader(io.StringIO(leaderboard(store, "--reference", "literature", "--format", "csv").stdout)))
    ccdm_csv = next(r for r in flat if (r["model"], r["preset"]) == ("ccdm", "lidc-v1"))
    assert float(ccdm_csv["reference_ged_32_mean"]) == 0.194 and ccdm_csv["reference_name"] == "literature"
    # the pivot: with only the literature, its first published metric the rows have (GED_16)
    pivot = leaderboard(store, "--reference", "literature", "--pivot", "--format", "markdown").stdout
    assert "| lidc | ccdm — literature (CCDM Table 1) | lidc-v1 | 0.212 |" in pivot
    assert "| lidc | ccdm — Δ (measured − literature) | lidc-v1 | −0.008 |" in pivot
    assert "| lidc | ccdm | lidc-v1 | **0.204 ± 0.000** |" in pivot
    pivot_hm = leaderboard(store, "--reference", "literature", "--pivot", "--pivot-metric", "hm_iou_32",
                           "--format", "json").stdout
    entry = next(e for e in json.loads(pivot_hm) if (e["model"], e["preset"]) == ("ccdm", "lidc-v1"))
    assert entry["literature_hm_iou_32_mean_d6"] == 0.631 and entry["delta_hm_iou_32_d6"] == pytest.approx(
        (1 - 0.22 + 0.032) - 0.631)
    both = leaderboard(store, "--reference", "paper", "--reference", "literature", "--format", "markdown").stdout
    table = cells_of(both)
    rows = {(c[1], c[3]): dict(zip(table[0], c, strict=True)) for c in table[2:]}
    assert rows[("punet", "paper")]["EWD (paper)"] == "0.451 ± 0.006"  # Table II, lidc, PU-Net, d = 6
    assert rows[("punet", "paper")]["GED_16 (literature)"] == ""
    assert rows[("punet", "lidc-v1")]["EWD (paper)"] == "" and rows[("punet", "lidc-v1")]["GED_16 (literature)"] == (
        "0.310")
    assert "no published value" not in both


def test_the_literature_gap_line_names_the_models_that_are_not_plugins_here_and_quotes_each_preset():
    from probseg_bench.published import reference_gap

    rows = build_leaderboard([literature_record("spunet", f, 0.3, preset="quick", dataset="lidc-sample",
                                                counts=()) for f in range(3)])
    (line,) = reference_gap(rows, [get_reference("literature")])
    assert "mose (no such model here)" in line and "cimd (no such model here)" in line
    assert "punet (no such model here)" not in line and "ccdm," in line
    notes = get_reference("literature").footnotes()
    assert "under the presets 'lidc-v1', 'lidc-v2' (the same split" in notes[1]
    assert notes[0].startswith("literature: published values of Zbinden et al., ICCV 2023 (CCDM), which collects")
