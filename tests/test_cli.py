"""The command line: error lines without tracebacks, the run -> store -> leaderboard path, resuming."""

from __future__ import annotations

import json
import re
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
         "unknown model 'nosuch'; known models: {models}"),
        (["run", "--model", "spunet", "--dataset", "nosuch"],
         "unknown dataset 'nosuch'; known datasets: {datasets}"),
        (["run", "--model", "spunet", "--dataset", "lidc-smaple"], "did you mean 'lidc-sample'?"),
        (["run", "--model", "punet", "--dataset", "lidc-sample", "--hp", "alpha=3"], "no hyperparameter 'alpha'"),
        (["run", "--model", "punet", "--dataset", "lidc-sample", "--flow", "radial"],
         "model 'punet' has no posterior flow"),
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
        (["run", "--model", "nosuch", "--dataset", "lidc-sample", "--preset", "quick"], "unknown model"),
        (["leaderboard", "--format", "xml"], "--format"),
    ],
)
def test_bad_arguments_give_one_line_and_exit_2(monkeypatch, run_main, tmp_path, args, expected):
    from probseg_bench.plugins import get_plugins

    monkeypatch.chdir(tmp_path)
    code, _, err = run_main(*args)
    assert code == 2
    # the known names are whatever is installed (a user's third-party plugins too), built-ins among them
    plugins = get_plugins()
    assert {"punet", "punet-nf", "spunet"} <= set(plugins.models.names())
    expected = expected.format(models=", ".join(plugins.models.names()),
                               datasets=", ".join(plugins.datasets.names()))
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
    ResultsStore(str(tmp_path / "r.db"))  # an existing store without records (a missing file is an error)
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
        # half of the cases lack an annotator: refused (one short case alone is dropped with a warning)
        (lambda root: [(root / f"c{i}" / "mask_b.png").unlink() for i in (3, 4, 5)], "c3"),
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


SYNTH_SMALL = ["--dataset", "synthetic", "--dataset-param", "n_images=40", "--dataset-param", "size=32", "-d", "2",
               "--fold", "0", *SMALL]


def test_a_piped_run_says_what_it_runs_then_prints_epoch_lines_and_a_summary(monkeypatch, run_main, tmp_path,
                                                                             tiny_preset):
    monkeypatch.chdir(tmp_path)
    args = ["run", "--model", "punet", *SYNTH_SMALL, "--preset", tiny_preset, "--epochs", "20", "--device", "cpu",
            "--storage", "r.db", "--format", "csv"]
    code, _, err = run_main(*args)
    assert code == 0, err
    lines = err.strip().splitlines()
    # what will run, after the checks: model, dataset, latent dim, folds, resolved epochs, preset, device, store
    assert lines[0] == ("run punet (convs_per_block=1, filters=4,8) on synthetic: d=2, fold 0, 20 epochs, preset tiny "
                        "(epochs=20), device cpu; results in sqlite:///r.db, checkpoints under probseg-runs")
    epochs = [line for line in lines if ": epoch " in line]
    assert [line.split(": epoch ")[1].split()[0] for line in epochs] == [f"{e}/20" for e in range(2, 21, 2)]
    assert all(line.startswith("punet/synthetic d=2 fold 0: epoch ") for line in epochs)
    number = r"[-+\d.e]+"
    assert re.search(rf"epoch 2/20  train {number} \(rec {number}, kl {number}\)  val {number}  ETA \d+s$", epochs[0])
    assert "GED" in lines[lines.index(epochs[-1]) + 1]  # then the fold's result line
    assert re.fullmatch(r"done in \d+s: 1 fold\(s\) trained, 0 skipped \(already stored\), 0 failed; results in "
                        r"sqlite:///r\.db, checkpoints under probseg-runs", lines[-1])
    code, _, err = run_main(*args)
    assert code == 0 and ": epoch " not in err
    assert "0 fold(s) trained, 1 skipped (already stored), 0 failed" in err.strip().splitlines()[-1]


def test_a_resumed_fold_says_from_which_epoch(monkeypatch, run_main, tmp_path, tiny_preset):
    import probseg_bench.training as training

    monkeypatch.chdir(tmp_path)
    args = ["run", "--model", "punet", *SYNTH_SMALL, "--preset", tiny_preset, "--epochs", "4", "--storage", "r.db"]
    save = training.save_training_state

    def save_then_interrupt(path, state):  # Ctrl-C right after the state of epoch 1 is written
        save(path, state)
        raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(training, "save_training_state", save_then_interrupt)
        code, _, err = run_main(*args)
    assert code == 130 and "interrupted" in err and "resumed" not in err
    assert len(list(tmp_path.rglob("fold0.partial.pt"))) == 1
    code, _, err = run_main(*args)
    assert code == 0, err
    assert "punet/synthetic d=2 fold 0: resumed from epoch 1/4 (its saved training state)" in err
    assert "epoch 2/4" in err and "1 fold(s) trained" in err


def write_grid(path, models: str) -> None:
    path.write_text(f"models = {models}\ndatasets = [\"synthetic\"]\nlatent_dims = [2]\nfolds = [0]\n"
                    "[dataset_params.synthetic]\nn_images = 40\nsize = 32\n[protocol]\nepochs = 1\n")


@pytest.mark.parametrize(
    "args",
    [
        ["--model", "nosuch", "--dataset", "synthetic"],
        ["--model", "punet", "--dataset", "synthetic", "--hp", "beta=abc"],
        ["--model", "punet", "--dataset", "synthetic", "--fold", "3"],
        ["--model", "punet", "--dataset", "synthetic", "--dataset-param", "sise=64"],
        ["--model", "punet", "--dataset", "folder"],  # needs --data-root: the data is checked before the store too
        ["--model", "nosuch", "--dataset", "synthetic", "--jobs", "2"],
        ["--model", "nosuch", "--dataset", "synthetic", "--executor", "ray"],
        ["--config", "grid.toml"],  # its second cell names an unknown model
    ],
)
def test_failing_checks_create_no_results_file(monkeypatch, run_main, tmp_path, args):
    monkeypatch.chdir(tmp_path)
    write_grid(tmp_path / "grid.toml", '["punet", "nosuch"]')
    code, _, err = run_main("run", *args, "--storage", "x.db")
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "x.db").exists()
    assert not (tmp_path / "probseg-runs").exists()
