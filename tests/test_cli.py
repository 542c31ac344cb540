"""The command line: error lines without tracebacks, the run -> store -> leaderboard path, resuming."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from probseg_bench.cli import app
from probseg_bench.results import ResultsStore

SMALL = ["--hp", "filters=4,8", "--hp", "convs_per_block=1"]


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["run", "--model", "nosuch", "--dataset", "lidc-sample"],
         "unknown model 'nosuch'; known models: punet, punet-nf, spunet"),
        (["run", "--model", "spunet", "--dataset", "nosuch"],
         "unknown dataset 'nosuch'; known datasets: folder, lidc, lidc-crops, lidc-sample, qubiq-brain-growth"),
        (["run", "--model", "spunet", "--dataset", "lidc-smaple"], "did you mean 'lidc-sample'?"),
        (["run", "--model", "punet", "--dataset", "lidc-sample", "--hp", "alpha=3"], "no hyperparameter 'alpha'"),
        (["run", "--model", "punet", "--dataset", "lidc-sample", "--flow", "radial"], "no hyperparameter 'flow'"),
        (["run", "--model", "punet-nf", "--dataset", "lidc-sample", "--flow", "glow"], "expected one of"),
        (["run", "--model", "punet", "--dataset", "lidc-sample", "--regularizer", "mmd"], "no swappable"),
        (["run", "--model", "spunet", "--dataset", "lidc-sample", "--regularizer", "mdm"], "did you mean 'mmd'"),
        (["run", "--model", "punet", "--dataset", "lidc-sample", "--hp", "beta=abc"], "expected a float"),
        (["run", "--model", "spunet", "--dataset", "lidc-sample", "--hp", "samples_per_annotation=x"],
         "expected an int"),
        (["run", "--model", "spunet", "--dataset", "lidc-sample", "--hp", "sinkhorn_correction=full"],
         "expected one of ['none', 'split']"),
        (["run", "--model", "punet", "--dataset", "lidc-sample", "--preset", "fast"], "unknown preset 'fast'"),
        (["run", "--model", "punet", "--dataset", "lidc-sample", "--fold", "3"], "--fold"),
        (["leaderboard", "--format", "xml"], "--format"),
    ],
)
def test_bad_arguments_give_one_line_and_exit_2(monkeypatch, run_main, tmp_path, args, expected):
    monkeypatch.chdir(tmp_path)
    code, _, err = run_main(*args)
    assert code == 2
    assert expected in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_console_script_prints_no_traceback(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-c", "from probseg_bench.cli import main; main()", "run", "--model", "nosuch",
         "--dataset", "lidc-sample"],
        capture_output=True, text=True, cwd=tmp_path,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("error: unknown model 'nosuch'")
    assert "Traceback" not in proc.stderr


def test_empty_store_gives_an_empty_json_leaderboard(tmp_path):
    result = CliRunner().invoke(app, ["leaderboard", "--format", "json", "--storage", str(tmp_path / "r.db")])
    assert result.exit_code == 0 and json.loads(result.output) == []


def test_run_punet_end_to_end_then_resume(monkeypatch, tmp_path, tiny_preset):
    monkeypatch.chdir(tmp_path)
    args = ["run", "--model", "punet", "--dataset", "lidc-sample", "--preset", tiny_preset, "-d", "2", "-d", "3",
            "--fold", "0", "--format", "json", *SMALL]
    first = CliRunner().invoke(app, args)
    assert first.exit_code == 0, first.output
    rows = json.loads(first.stdout)
    assert sorted(r["latent_dim"] for r in rows) == [2, 3]
    store = ResultsStore()  # the default store in the working directory
    records = store.records()
    assert len(records) == 2
    rec = records[0]
    assert rec.hyperparameters["model"]["filters"] == "4,8"
    assert len(rec.per_image["ewd"]) == len(rec.test_ids) == 6
    assert rec.split_hash and rec.versions["torch"] and rec.protocol["epochs"] == 1
    for r in records:
        assert 1.0 <= r.metrics["er"] <= r.latent_dim + 1e-9
        assert r.metrics["hm_iou"] + r.metrics["ewd"] == pytest.approx(1.0)
    second = CliRunner().invoke(app, args)
    assert second.exit_code == 0
    assert "already in the results store" in second.stderr
    assert len(store.records()) == 2


@pytest.mark.parametrize(
    ("model", "extra", "variant", "terms"),
    [
        ("spunet", ["--regularizer", "mmd"], "regularizer=mmd", [["kl", "alpha"], ["mmd", "beta"]]),
        ("punet-nf", ["--flow", "radial"], "flow=radial", [["kl", "beta"]]),
    ],
)
def test_variants_run_and_are_labelled(monkeypatch, tmp_path, tiny_preset, model, extra, variant, terms):
    monkeypatch.chdir(tmp_path)
    args = ["run", "--model", model, "--dataset", "lidc-sample", "--preset", tiny_preset, "-d", "2", "--fold", "1",
            "--format", "markdown", *SMALL, *extra]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert f"| {model} (" in result.stdout and variant in result.stdout
    record = ResultsStore().records()[0]
    assert variant in record.variant
    assert record.hyperparameters["objective"] == terms


def write_folder_case(root, case: str, mask_values=(0, 255)) -> None:
    import numpy as np
    from PIL import Image

    (root / case).mkdir(parents=True)
    Image.fromarray(np.full((16, 16), 100, np.uint8)).save(root / case / "image.png")
    for a in ("a", "b"):
        mask = np.full((16, 16), mask_values[0], np.uint8)
        mask[4:8, 4:8] = mask_values[1]
        Image.fromarray(mask).save(root / case / f"mask_{a}.png")


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda root: (root / "c3" / "mask_b.png").unlink(), "c3"),
        (lambda root: (root / "c2" / "mask_a.png").write_bytes(b"\x89PNG broken"), "mask_a.png"),
        (lambda root: None, "needs --data-root"),
    ],
)
def test_bad_dataset_files_exit_2_with_one_line_and_store_nothing(monkeypatch, run_main, tmp_path, damage, message):
    root = tmp_path / "cases"
    for i in range(6):
        write_folder_case(root, f"c{i}")
    damage(root)
    monkeypatch.chdir(tmp_path)
    args = ["run", "--model", "punet", "--dataset", "folder"]
    if message != "needs --data-root":
        args += ["--data-root", str(root)]
    code, _, err = run_main(*args)
    assert code == 2 and len(err.strip().splitlines()) == 1 and message in err and "Traceback" not in err
    assert ResultsStore().records() == []
    code, _, err = run_main("data", "verify", "folder", *args[5:])
    assert code == 2 and message in err
