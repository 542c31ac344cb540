"""Issue 25 items 5 and 6: every output location is checked before any work, a write that fails later is one line
naming the path with nothing half-written and what was stored kept; every numeric option is range-checked where it
enters, sizes that cannot fit in memory are refused before allocating, and any other exception is one line (type,
message, the debug flag) with exit status 1."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from probseg_bench.atomic import atomic_folder, atomic_torch_save, atomic_write_text
from probseg_bench.errors import OutputError, ProbsegError
from probseg_bench.outputs import check_output_file, check_output_folder, check_storage

SMALL = ["--dataset", "synthetic", "--dataset-param", "n_images=16", "--dataset-param", "size=32",
         "--preset", "quick", "--epochs", "1"]
REPO = Path(__file__).resolve().parents[1]


def one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    return lines[0]


@pytest.fixture
def no_work(monkeypatch):
    """Loading a dataset or training fails the test: the command must stop before."""
    def forbidden(*_, **__):
        raise AssertionError("work started before the output locations were checked")

    monkeypatch.setattr("probseg_bench.experiment.load_dataset", forbidden)
    monkeypatch.setattr("probseg_bench.cli.data._load", forbidden)
    monkeypatch.setattr("probseg_bench.analysis.loading.load_run", forbidden)


@pytest.fixture(scope="module")
def stored(tmp_path_factory) -> Path:
    """A folder with r.db holding fold 0 of punet on small synthetic data (its checkpoints under runs/)."""
    root = tmp_path_factory.mktemp("stored")
    from probseg_bench.cli import app

    result = CliRunner().invoke(app, ["run", "--model", "punet", *SMALL, "--fold", "0",
                                      "--storage", str(root / "r.db"), "--run-dir", str(root / "runs")])
    assert result.exit_code == 0, result.output
    return root


# ----------------------------------------------------------------------------------- output locations (item 5)
def test_a_run_dir_under_a_file_is_refused_before_any_training(run_main, tmp_path, monkeypatch, no_work):
    """The issue's input: `touch afile; run ... --run-dir afile/runs` trained and evaluated, then died with
    NotADirectoryError and stored nothing."""
    monkeypatch.chdir(tmp_path)
    Path("afile").touch()
    code, out, err = run_main("run", "--model", "punet", *SMALL, "--fold", "0", "--run-dir", "afile/runs",
                              "--storage", "r.db")
    assert code == 2 and out == ""
    assert one_line(err) == "error: --run-dir afile/runs: afile is a file, not a folder; choose another path"
    assert not Path("r.db").exists()


@pytest.mark.parametrize("args", [
    ["run", "--model", "punet", *SMALL, "--storage", "afile/r.db"],
    ["run", "--model", "punet", *SMALL, "--run-dir", "afile"],
    ["validate", "--model", "punet", "--output", "afile/v", "--storage", "r.db"],
    ["validate", "--model", "punet", "--run-dir", "afile/runs", "--storage", "r.db"],
    ["validate", "--model", "punet", "--storage", "afile/r.db"],
    ["tune", "--model", "punet", *SMALL, "--trials", "1", "--output", "afile/best.toml", "--storage", "r.db"],
    ["tune", "--model", "punet", *SMALL, "--trials", "1", "--storage", "afile/r.db"],
    ["analyze", "--model", "punet", "--dataset", "synthetic", "--output", "afile/a", "--storage", "r.db"],
    ["data", "convert", "synthetic", "--output", "afile/converted"],
])
def test_every_output_location_is_checked_before_any_work(run_main, tmp_path, monkeypatch, no_work, args):
    monkeypatch.chdir(tmp_path)
    Path("afile").touch()
    code, out, err = run_main(*args)
    line = one_line(err)
    assert code == 2 and out == "" and re.search(r"afile(: it)? is a file, not a folder; choose another", line), err
    assert set(os.listdir(tmp_path)) == {"afile"}  # no store, no run dir, no study, no folder


def test_a_grid_run_checks_its_run_dir_first(run_main, tmp_path, monkeypatch, no_work):
    monkeypatch.chdir(tmp_path)
    Path("afile").touch()
    Path("grid.toml").write_text('models = ["punet"]\ndatasets = ["synthetic"]\n[protocol]\nepochs = 1\n')
    code, _, err = run_main("run", "--config", "grid.toml", "--run-dir", "afile/x", "--storage", "r.db")
    assert code == 2 and "--run-dir afile/x: afile is a file" in one_line(err)


def test_the_checks_name_what_is_wrong(tmp_path, monkeypatch):
    (tmp_path / "f").touch()
    (tmp_path / "d").mkdir()
    assert check_output_folder(tmp_path / "new" / "deeper", "--output") == tmp_path / "new" / "deeper"
    assert not (tmp_path / "new").exists()  # checking creates nothing
    assert sorted(os.listdir(tmp_path)) == ["d", "f"]  # not even the probe file is left
    with pytest.raises(ProbsegError, match=r"^--output .*/f: it is a file, not a folder"):
        check_output_folder(tmp_path / "f", "--output")
    with pytest.raises(ProbsegError, match=r"^--output .*/d: it is a folder, not a file"):
        check_output_file(tmp_path / "d", "--output")
    with pytest.raises(ProbsegError, match=r"^--storage .*/f/r\.db: .*/f is a file, not a folder"):
        check_storage(f"sqlite:///{tmp_path}/f/r.db")
    check_storage("postgresql://user@host/db")  # a server is checked when connecting, not here

    def read_only(*_, **__):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr("probseg_bench.outputs.tempfile.mkstemp", read_only)
    with pytest.raises(ProbsegError, match=r"^--run-dir .*/d/runs: cannot write in .*/d \(Permission denied\)$"):
        check_output_folder(tmp_path / "d" / "runs", "--run-dir")


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_folder_is_refused(tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        with pytest.raises(ProbsegError, match="cannot write in"):
            check_output_folder(folder / "runs", "--run-dir")
    finally:
        folder.chmod(0o700)


def test_a_convert_output_that_is_not_empty_is_refused_before_reading(run_main, tmp_path, no_work):
    out = tmp_path / "out"
    out.mkdir()
    (out / "x").touch()
    code, _, err = run_main("data", "convert", "synthetic", "--output", str(out))
    assert code == 2 and "the output folder exists and is not empty" in one_line(err)


LIMITED = """
import resource, sys
resource.setrlimit(resource.RLIMIT_FSIZE, ({limit}, {limit}))
{body}
"""


def _limited(body: str, limit: int, cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run ``body`` in a Python whose files may not grow beyond ``limit`` bytes (SIGXFSZ is ignored by Python, so a
    write past it fails with EFBIG, as on a full disk)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-c", LIMITED.format(limit=limit, body=body)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


@pytest.mark.skipif(not hasattr(os, "geteuid"), reason="RLIMIT_FSIZE is POSIX")
def test_atomic_writes_that_fail_leave_nothing_and_name_the_path(tmp_path):
    (tmp_path / "old.txt").write_text("kept")
    body = """
from pathlib import Path
from probseg_bench.atomic import atomic_folder, atomic_torch_save, atomic_write_text
from probseg_bench.errors import OutputError
import torch

def folder():
    with atomic_folder(Path("folder")) as tmp:
        (tmp / "a.txt").write_text("small")
        (tmp / "b.bin").write_bytes(b"x" * 100_000)

for write in [lambda: atomic_write_text(Path("old.txt"), "x" * 100_000),
              lambda: atomic_torch_save({"w": torch.zeros(100_000)}, Path("model.pt")), folder]:
    try:
        write()
    except OutputError as exc:
        print(exc)
"""
    done = _limited(body, 10_000, tmp_path)
    lines = done.stdout.strip().splitlines()
    assert done.returncode == 0, done.stderr
    assert lines == [f"{name}: cannot write (File too large); nothing half-written was left there"
                     for name in ("old.txt", "model.pt", "folder")]
    assert sorted(os.listdir(tmp_path)) == ["old.txt"] and (tmp_path / "old.txt").read_text() == "kept"


def test_atomic_folder_replaces_an_earlier_folder_only_when_complete(tmp_path):
    target = tmp_path / "analysis"
    target.mkdir()
    (target / "old.png").write_text("old")
    with pytest.raises(RuntimeError), atomic_folder(target) as work:
        (work / "new.png").write_text("new")
        raise RuntimeError("drawing failed")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["analysis"] and os.listdir(target) == ["old.png"]
    with atomic_folder(target) as work:
        (work / "new.png").write_text("new")
        assert not (target / "new.png").exists()  # nothing visible before the end
    assert sorted(p.name for p in tmp_path.iterdir()) == ["analysis"] and os.listdir(target) == ["new.png"]
    assert (target.stat().st_mode & 0o777) == 0o777 & ~_umask()  # a normal folder, not mkdtemp's private one
    atomic_write_text(target / "r.html", "x")
    assert ((target / "r.html").stat().st_mode & 0o777) == 0o666 & ~_umask()
    atomic_torch_save({"a": 1}, target / "m.pt")
    assert (target / "m.pt").stat().st_size > 0


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@pytest.mark.skipif(not hasattr(os, "geteuid"), reason="RLIMIT_FSIZE is POSIX")
def test_a_checkpoint_that_cannot_be_written_is_one_line_and_keeps_the_stored_folds(stored, tmp_path):
    """A write that fails after training (here a file size limit below the checkpoint's ~5 MB) names the file,
    leaves no temporary file, and the fold stored by the earlier run stays in the store."""
    import shutil

    for name in ("r.db", "r.db-wal", "r.db-shm"):  # the store in WAL mode: its log holds the latest records
        if (stored / name).exists():
            shutil.copy(stored / name, tmp_path / name)
    args = ["run", "--model", "punet", *SMALL, "--fold", "1", "--storage", "r.db", "--run-dir", "runs"]
    body = f"sys.argv = ['probseg-bench', *{args!r}]\nfrom probseg_bench.cli import main\nmain()"
    done = _limited(body, 1_000_000, tmp_path)
    assert done.returncode == 2, done.stderr
    error = [line for line in done.stderr.splitlines() if line.startswith("error")]
    assert len(error) == 1 and "Traceback" not in done.stderr
    assert "fold1" in error[0] and "cannot write (File too large)" in error[0]
    assert "stored in sqlite:///r.db" in error[0]
    assert not [p for p in (tmp_path / "runs").rglob("*") if p.name.endswith(".tmp")]
    from probseg_bench.results import ResultsStore

    assert [(r.model, r.fold) for r in ResultsStore(str(tmp_path / "r.db"), create=False).records()] == [
        ("punet", 0)]


def test_a_record_that_cannot_be_written_is_an_output_error(tmp_path, monkeypatch):
    from sqlalchemy.exc import OperationalError

    from probseg_bench.results import FoldRecord, ResultsStore

    store = ResultsStore(str(tmp_path / "r.db"))

    class Full:
        def __enter__(self):
            raise OperationalError("INSERT", {}, Exception("database or disk is full"))

        def __exit__(self, *_):
            return False

    monkeypatch.setattr(store.engine, "begin", lambda: Full())
    record = FoldRecord(model="punet", dataset="synthetic", latent_dim=6, fold=0, seed=0, preset="quick",
                        config_hash="c", split_hash="s", hyperparameters={}, protocol={}, metrics={}, per_image={},
                        test_ids=[], timings={}, versions={})
    with pytest.raises(OutputError, match=r"r\.db: cannot write the record \(database or disk is full\)"):
        store.add(record)


# ------------------------------------------------------------------ analysis: bounded and atomic (item 6)
def test_analyze_refuses_more_samples_than_an_evaluation_may_allocate(run_main, stored, tmp_path):
    code, out, err = run_main("analyze", "--model", "punet", "--dataset", "synthetic", "--storage",
                              str(stored / "r.db"), "--samples", "10007", "--output", str(tmp_path / "a"))
    lines = err.strip().splitlines()
    assert code == 2 and out == "" and len(lines) == 2 and lines[0].startswith("analysing"), err
    assert lines[1].startswith("error: --samples 10007: the metrics of one evaluation batch would allocate about ")
    assert "HM-IoU's 40028 x 40028 assignment matrix" in lines[1] and "11.9 GiB per copy" in lines[1]
    assert "more than the bound of 4 GiB per batch" in lines[1]
    assert not (tmp_path / "a").exists()


def test_a_failing_analysis_leaves_no_folder_and_keeps_the_earlier_one(run_main, stored, tmp_path, monkeypatch):
    out = tmp_path / "a"
    earlier = out / "punet-synthetic-d6-fold0-earlier"

    def broken(*_, **__):
        raise RuntimeError("CUDA error: an illegal memory access was encountered\nCompile with TORCH_USE_CUDA_DSA")

    monkeypatch.setattr("probseg_bench.analysis.latent.mean_predictions", broken)
    monkeypatch.setenv("PROBSEG_DEBUG", "0")
    code, _, err = run_main("analyze", "--model", "punet", "--dataset", "synthetic", "--storage",
                            str(stored / "r.db"), "--output", str(out))
    assert code == 1 and err.strip().splitlines()[-1] == (
        "error: RuntimeError: CUDA error: an illegal memory access was encountered Compile with TORCH_USE_CUDA_DSA "
        "(an unexpected error; rerun with probseg-bench --debug ... (or PROBSEG_DEBUG=1) for the traceback)")
    assert not out.exists() or os.listdir(out) == []  # no half-written analysis folder, no temporary one
    earlier.mkdir(parents=True)
    (earlier / "report.html").write_text("earlier")
    folder = out / f"punet-synthetic-d6-fold0-{_config(stored)}"
    folder.mkdir()
    (folder / "report.html").write_text("kept")
    code, _, _ = run_main("analyze", "--model", "punet", "--dataset", "synthetic", "--storage",
                          str(stored / "r.db"), "--output", str(out))
    assert code == 1
    assert sorted(p.name for p in out.iterdir()) == sorted([earlier.name, folder.name])
    assert (folder / "report.html").read_text() == "kept"


def test_ctrl_c_in_a_command_without_its_own_account_is_one_line_and_leaves_no_folder(run_main, stored, tmp_path,
                                                                                      monkeypatch):
    """analyze interrupted while it draws its figures: exit 130, one line, no analysis folder (not a traceback)."""
    from probseg_bench.cli import INTERRUPTED

    def interrupted(*_, **__):
        raise KeyboardInterrupt

    monkeypatch.setattr("probseg_bench.analysis.latent.mean_predictions", interrupted)
    out = tmp_path / "a"
    code, _, err = run_main("analyze", "--model", "punet", "--dataset", "synthetic", "--storage",
                            str(stored / "r.db"), "--output", str(out))
    assert code == 130 and err.strip().splitlines()[-1] == INTERRUPTED and "Traceback" not in err
    assert not out.exists() or os.listdir(out) == []


def _config(stored: Path) -> str:
    from probseg_bench.results import ResultsStore

    return ResultsStore(str(stored / "r.db"), create=False).records()[0].config_hash


# ------------------------------------------------------------------------- numeric ranges where they enter (6)
@pytest.mark.parametrize(("args", "expected"), [
    (["analyze", "--model", "punet", "--dataset", "synthetic", "--samples", "-1"],
     "--samples: expected an integer >= 1, got -1"),
    (["analyze", "--model", "punet", "--dataset", "synthetic", "--samples", "0"],
     "--samples: expected an integer >= 1, got 0"),
    (["run", "--model", "punet", *SMALL, "--retries", "-1"], "--retries: expected >= 0, got -1"),
    (["run", "--model", "punet", *SMALL, "--jobs", "0"], "--jobs: expected >= 1, got 0"),
    (["run", "--model", "punet", *SMALL, "--latent-dim", "100000"], "--latent-dim: expected integers <= 1024"),
    (["run", "--model", "punet", *SMALL[:-2], "--epochs", "0"], "protocol setting 'epochs': expected a positive"),
    (["run", "--model", "punet", "--dataset", "synthetic", "--dataset-param", "size=8"],
     "dataset parameter 'size': expected a value in 32..4096, got 8"),
    (["run", "--model", "punet", "--dataset", "synthetic", "--dataset-param", "n_images=0"],
     "dataset parameter 'n_images': expected a value >= 1, got 0"),
    (["run", "--model", "punet", "--dataset", "synthetic", "--dataset-param", "levels=9"],
     "dataset parameter 'levels': expected a value in 1..4, got 9"),
    (["run", "--model", "punet", *SMALL, "--hp", "grad_clip=-1"],
     "hyperparameter 'grad_clip': expected a value >= 0, got -1.0"),
    (["run", "--model", "punet-nf", *SMALL, "--hp", "num_flows=0"],
     "hyperparameter 'num_flows': expected a value >= 1, got 0"),
    (["tune", "--model", "punet-nf", *SMALL, "--param", "num_flows=0:4"],
     "--param 'num_flows=0:4': hyperparameter 'num_flows': expected a value >= 1, got 0.0"),
    (["tune", "--model", "punet", *SMALL, "--workers", "0"], "--workers: expected >= 1, got 0"),
    (["tune", "--model", "punet", *SMALL, "--top", "0"], "--top: expected >= 1, got 0"),
    (["tune", "--model", "punet", *SMALL, "--fold", "7"], "--fold: expected values in 0..2, got 7"),
    (["compare", "a", "b", "--dataset", "synthetic", "--seed", "-1"], "--seed: expected an integer >= 0, got -1"),
    (["compare", "a", "b", "--dataset", "synthetic", "--bootstrap", "0"], "--bootstrap: expected >= 1, got 0"),
    (["validate", "--model", "punet", "--dataset-param", "annotators=0"],
     "dataset parameter 'annotators': expected a value >= 1, got 0"),
    (["data", "inspect", "synthetic", "--dataset-param", "structures=-1"],
     "dataset parameter 'structures': expected a value in 0..6, got -1"),
])
def test_numeric_options_are_range_checked_where_they_enter(run_main, tmp_path, monkeypatch, args, expected):
    monkeypatch.chdir(tmp_path)
    code, out, err = run_main(*args)
    assert code == 2 and out == "" and expected in one_line(err), err
    assert os.listdir(tmp_path) == []  # nothing written


@pytest.mark.parametrize(("param", "expected"), [
    ("beta=1:inf", "expected finite bounds whose difference is finite too"),  # Optuna: OverflowError
    ("beta=-1e308:1e308", "expected finite bounds whose difference is finite too"),
    ("beta=nan:1", "expected finite bounds"),
    ("beta=-5:1", "hyperparameter 'beta': expected a value >= 0, got -5.0"),
])
def test_tune_ranges_optuna_cannot_sample_are_refused(run_main, tmp_path, monkeypatch, param, expected):
    monkeypatch.chdir(tmp_path)
    code, _, err = run_main("tune", "--model", "punet", *SMALL, "--trials", "1", "--param", param)
    assert code == 2 and f"--param '{param}': {expected}" in one_line(err), err


def test_a_grid_value_out_of_range_names_the_file(run_main, tmp_path):
    grid = tmp_path / "g.toml"
    grid.write_text('models = ["punet"]\ndatasets = ["synthetic"]\n[dataset_params.synthetic]\nsize = 8\n')
    code, _, err = run_main("run", "--config", str(grid), "--storage", str(tmp_path / "r.db"))
    assert code == 2 and f"{grid}: [dataset_params.synthetic]: dataset parameter 'size': expected a value in " \
                          "32..4096, got 8" in one_line(err)


def test_an_evaluation_beyond_the_bound_is_refused_before_any_fold_trains(run_main, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("g.toml").write_text('models = ["punet"]\ndatasets = ["synthetic"]\nfolds = [0]\n[dataset_params.synthetic]'
                              '\nn_images = 16\nsize = 32\n[protocol]\nepochs = 1\nn_eval_samples = 10007\n')

    def forbidden(*_, **__):
        raise AssertionError("trained")

    monkeypatch.setattr("probseg_bench.experiment.Experiment.train", forbidden)
    code, _, err = run_main("run", "--config", "g.toml", "--storage", "r.db")
    line = err.strip().splitlines()[-1]
    assert code == 2 and line.startswith("error: protocol setting 'n_eval_samples' (10007 samples per image): the "
                                         "metrics of one evaluation batch would allocate about"), err
    assert not Path("r.db").exists()


def test_evaluation_memory_estimate_and_bound():
    from probseg_bench.evaluation import EVALUATION_MEMORY_BOUND, check_evaluation_memory, evaluation_memory

    terms = dict(evaluation_memory(10007, 4, 32, 32, 4))
    assert terms["HM-IoU's 40028 x 40028 assignment matrix, lcm(10007 samples, 4 annotators), 11.9 GiB per copy"] \
        == 2 * 40028**2 * 8
    assert terms["4 x 10007 sample maps of 32 x 32 pixels"] == 4 * 10007 * 1024 * 13
    check_evaluation_memory(16, 4, 128, 128, 32, "x")  # the paper's evaluation
    check_evaluation_memory(100, 4, 128, 128, 32, "x")  # the field's LIDC protocols' largest n
    assert sum(dict(evaluation_memory(100, 4, 128, 128, 32)).values()) < EVALUATION_MEMORY_BOUND
    for n in (0, -1, True):
        with pytest.raises(ProbsegError, match="expected an integer >= 1 samples per image"):
            check_evaluation_memory(n, 4, 32, 32, 4, "n_samples")


def test_evaluate_refuses_before_drawing():
    import torch

    from probseg_bench.api import MultiRaterData
    from probseg_bench.evaluation import evaluate

    class NeverSampled(torch.nn.Module):
        def sample(self, *_):
            raise AssertionError("drew samples")

    data = MultiRaterData(np.zeros((2, 1, 32, 32), np.float32), np.zeros((2, 4, 32, 32), np.uint8),
                          np.array(["a", "b"]))
    for n in (0, 10007):
        with pytest.raises(ProbsegError, match=f"n_samples {n}"):
            evaluate(NeverSampled(), data, torch.device("cpu"), n_samples=n, batch_size=2)


# ------------------------------------------------------------------------- memory before allocation (item 6)
def test_a_dataset_that_cannot_fit_in_memory_is_refused_before_allocating(run_main):
    """The issue's input: `data inspect synthetic --dataset-param n_images=100000000` ended in numpy's
    _ArrayMemoryError for 1.49 TiB."""
    code, out, err = run_main("data", "inspect", "synthetic", "--dataset-param", "n_images=100000000")
    line = one_line(err)
    assert code == 2 and out == ""
    assert line.startswith("error: dataset 'synthetic': --dataset-param n_images=100000000 (with size=128, "
                           "annotators=4): needs 11.9 TiB of memory, more than this machine's ")


def test_loaders_with_a_size_parameter_refuse_what_cannot_fit(tmp_path, monkeypatch):
    from probseg_bench.memory import check_fits, format_bytes
    from probseg_datasets.folder import load_folder
    from probseg_datasets.synthetic import load_synthetic

    for case in ("c1", "c2"):
        (tmp_path / case).mkdir()
        from PIL import Image

        Image.fromarray(np.zeros((16, 16), np.uint8)).save(tmp_path / case / "image.png")
        Image.fromarray(np.full((16, 16), 255, np.uint8)).save(tmp_path / case / "mask_a.png")
    monkeypatch.setattr("probseg_bench.memory.memory_limit", lambda: 10_000)
    with pytest.raises(ProbsegError, match=r"^dataset 'folder': --dataset-param size=64 \(2 cases, 1 annotators\): "
                                           r"needs 40 KiB of memory, more than this machine's 9.77 KiB"):
        load_folder(tmp_path, size=64)
    assert load_folder(tmp_path, size=16).masks.shape == (2, 1, 16, 16)  # 2.5 KiB fit
    with pytest.raises(ProbsegError, match="n_images=4 "):
        load_synthetic(n_images=4, size=32)
    assert format_bytes(1.49 * 2**40) == "1.49 TiB" and format_bytes(512) == "512 B"
    with pytest.raises(ProbsegError, match=r"^--bootstrap 5: needs 1 KiB"):
        check_fits(1024, "--bootstrap 5", limit=100)


def test_compare_refuses_a_bootstrap_that_cannot_fit(stored, monkeypatch):
    from probseg_bench.comparison import compare_pair
    from probseg_bench.results import ResultsStore

    records = ResultsStore(str(stored / "r.db"), create=False).records()
    monkeypatch.setattr("probseg_bench.memory.memory_limit", lambda: 2**20)
    with pytest.raises(ProbsegError, match=r"^--bootstrap 1000000 \(\d+ paired test images\): needs"):
        compare_pair(records, records, "ged", "a", "b", n_bootstrap=1_000_000)


# ------------------------------------------------------------------------------ the last line of defence (6)
@pytest.mark.parametrize("exc", [
    OSError(28, "No space left on device"),
    MemoryError("Unable to allocate 1.49 TiB for an array with shape (100000000, 1, 128, 128)"),
    RuntimeError("The expanded size of the tensor (-1) must match the existing size (16) at non-singleton "
                 "dimension 1.  Target sizes: [4, -1, 32, 32].  Tensor sizes: [4, 16, 32, 32]"),
    OverflowError("Range exceeds valid bounds"),
])
def test_any_other_exception_is_one_line_with_its_type_and_exit_1(run_main, monkeypatch, exc):
    def boom(*_, **__):
        raise exc

    monkeypatch.setenv("PROBSEG_DEBUG", "")
    monkeypatch.setattr("probseg_bench.cli.data._load", boom)
    code, out, err = run_main("data", "inspect", "synthetic")
    line = one_line(err)
    message = " ".join(str(exc).split())
    assert code == 1 and out == "" and "Traceback" not in err
    assert line == (f"error: {type(exc).__name__}: {message} (an unexpected error; rerun with probseg-bench --debug "
                    "... (or PROBSEG_DEBUG=1) for the traceback)")


@pytest.mark.parametrize("how", ["flag", "env"])
def test_the_debug_flag_prints_the_traceback(run_main, monkeypatch, how):
    def boom(*_, **__):
        raise ValueError("deep inside")

    monkeypatch.setenv("PROBSEG_DEBUG", "1" if how == "env" else "0")
    monkeypatch.setattr("probseg_bench.cli.data._load", boom)
    code, _, err = run_main(*(["--debug"] if how == "flag" else []), "data", "inspect", "synthetic")
    assert code == 1 and "Traceback (most recent call last)" in err and 'raise ValueError("deep inside")' in err
    assert err.strip().splitlines()[-1] == "error: ValueError: deep inside (an unexpected error (traceback above))"


def test_a_suite_error_keeps_exit_2_and_one_line(run_main, monkeypatch):
    monkeypatch.setenv("PROBSEG_DEBUG", "")
    code, _, err = run_main("data", "inspect", "nosuch")
    assert code == 2 and one_line(err).startswith("error: unknown dataset 'nosuch'")


def test_a_long_message_is_cut_on_its_one_line():
    from probseg_bench.cli import MAX_MESSAGE
    from probseg_bench.cli import one_line as line_of

    text = line_of(RuntimeError("x" * 5000))
    assert text.startswith("RuntimeError: xxx") and text.endswith("...")
    assert len(text) == len("RuntimeError: ") + MAX_MESSAGE
    assert line_of(KeyError()) == "KeyError"
    assert line_of(OSError(2, "No such file", "x.db")) == "FileNotFoundError: [Errno 2] No such file: 'x.db'"
    assert line_of(RuntimeError("first\n  second\tthird")) == "RuntimeError: first second third"
