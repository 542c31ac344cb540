"""Issue 25 items 7 and 9: an interruption says exactly what is on disk, and a damaged file the suite wrote itself
(training state, best checkpoint, stored record) is refused in one line that never suggests ``weights_only=False``.

Interruptions are simulated by raising KeyboardInterrupt from a patched function (in-process, deterministic) and,
for the local worker processes of a grid, by a real SIGINT to the command.
"""

from __future__ import annotations

import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from probseg_bench.errors import ProbsegError

T = ["--dataset", "synthetic", "--dataset-param", "n_images=16", "--dataset-param", "size=32", "--preset", "quick",
     "--epochs", "1", "--fold", "0"]
RUN = ["run", "--model", "punet", *T, "--storage", "r.db", "--run-dir", "runs"]
CLI = "import sys\nfrom probseg_bench.cli import main\nsys.argv = ['probseg-bench'] + sys.argv[1:]\nmain()\n"


def last_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    return lines[-1]


def partial_states(root: Path) -> list[Path]:
    return sorted(root.rglob("*.partial.pt"))


def interrupt(*args, **kwargs):
    raise KeyboardInterrupt


def one_line_damaged(message: str, path: Path) -> None:
    """The item-9 contract: one line, the file, "damaged", no advice to load with weights_only=False."""
    assert "\n" not in message.strip()
    assert str(path) in message and "damaged" in message
    assert "weights_only" not in message and "Weights only" not in message


# --- item 7: the state after the last epoch is saved; every message says what is on disk -----------------------


def test_ctrl_c_during_evaluation_keeps_the_last_epoch_and_a_rerun_only_evaluates(run_main, tmp_path, monkeypatch):
    import probseg_bench.evaluation as evaluation
    import probseg_bench.training as training

    monkeypatch.chdir(tmp_path)
    with monkeypatch.context() as patch:
        patch.setattr(evaluation, "evaluate", interrupt)  # Ctrl-C right after the last epoch's line
        code, _, err = run_main(*RUN)
    assert code == 130
    (state,) = partial_states(tmp_path)
    line = last_line(err)
    assert line.startswith("interrupted: 0 fold(s) finished in this run are stored in sqlite:///")
    assert (f"punet/synthetic d=6 fold 0 was being evaluated: its training state after its last epoch (1/1) is "
            f"saved in {Path('runs') / state.relative_to(tmp_path / 'runs')}, so a rerun only evaluates it") in line
    assert line.endswith("rerun the same command to resume")
    assert torch.load(state, weights_only=True)["epoch"] == 1

    def no_training(*args, **kwargs):
        raise AssertionError("the fold was trained again")

    monkeypatch.setattr(training, "_train_epoch", no_training)
    code, _, err = run_main(*RUN)
    assert code == 0, err
    assert "resumed from epoch 1/1" in err and "1 fold(s) trained" in err
    assert partial_states(tmp_path) == []  # the record replaced the state
    from probseg_bench.results import ResultsStore

    (record,) = ResultsStore("r.db").records()
    assert record.best_epoch == 1 and len(record.history) == 1 and record.metrics["ged"] is not None


def test_ctrl_c_mid_training_names_the_file_and_epoch_written(run_main, tmp_path, monkeypatch):
    import probseg_bench.training as training

    monkeypatch.chdir(tmp_path)
    save = training.save_training_state

    def save_then_interrupt(path, state):  # Ctrl-C right after the state of epoch 1 of 3 is written
        save(path, state)
        raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(training, "save_training_state", save_then_interrupt)
        code, _, err = run_main(*[("3" if a == "1" and RUN[i - 1] == "--epochs" else a) for i, a in enumerate(RUN)])
    assert code == 130
    (state,) = partial_states(tmp_path)
    assert re.search(r"punet/synthetic d=6 fold 0: its training state after epoch 1/3 is saved in "
                     rf"{re.escape(str(Path('runs')))}\S*fold0\.partial\.pt; a rerun resumes it from epoch 2; "
                     "rerun the same command to resume$", last_line(err)), last_line(err)
    assert torch.load(state, weights_only=True)["epoch"] == 1  # what the line says is what is on disk


def test_ctrl_c_before_any_state_says_nothing_is_on_disk(run_main, tmp_path, monkeypatch):
    import probseg_bench.training as training

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(training, "_train_epoch", interrupt)
    code, _, err = run_main(*RUN)
    assert code == 130 and partial_states(tmp_path) == []
    assert ("nothing of punet/synthetic d=6 fold 0 is on disk (interrupted before its first training state was "
            "written): a rerun trains it from its first epoch") in last_line(err)


def test_ctrl_c_while_preparing_says_no_fold_was_in_progress(run_main, tmp_path, monkeypatch):
    from probseg_bench.protocol import RunPlan

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(RunPlan, "prepare", interrupt)
    code, _, err = run_main(*RUN)
    assert code == 130
    assert last_line(err) == ("interrupted: 0 fold(s) finished in this run are stored in sqlite:///r.db; no fold was "
                              "in progress (nothing of one on disk); rerun the same command to resume")


def test_ctrl_c_after_the_record_was_stored_says_so_and_leaves_no_state(run_main, tmp_path, monkeypatch):
    from probseg_bench.results import ResultsStore

    monkeypatch.chdir(tmp_path)
    add = ResultsStore.add

    def add_then_interrupt(self, record):
        add(self, record)
        raise KeyboardInterrupt

    monkeypatch.setattr(ResultsStore, "add", add_then_interrupt)
    code, _, err = run_main(*RUN)
    assert code == 130
    assert "punet/synthetic d=6 fold 0 was stored just before the interruption" in last_line(err)
    assert partial_states(tmp_path) == []


def test_validate_ctrl_c_says_what_is_on_disk_and_that_no_report_was_written(run_main, tmp_path, monkeypatch):
    import probseg_bench.evaluation as evaluation

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(evaluation, "evaluate", interrupt)
    code, _, err = run_main("validate", "--model", "punet", *T, "--storage", "r.db", "--run-dir", "runs",
                            "--output", "out")
    assert code == 130
    line = last_line(err)
    assert line.startswith("interrupted: 0 fold(s) finished in this run are stored in sqlite:///r.db; ")
    assert "fold 0 was being evaluated: its training state after its last epoch (1/1) is saved in runs" in line
    assert "; no report was written to out; rerun the same command to resume" in line
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


@pytest.mark.parametrize(("target", "phase"), [("train", "training"), ("evaluate", "its evaluation")])
def test_tune_ctrl_c_reads_the_study_back(run_main, tmp_path, monkeypatch, target, phase):
    import probseg_bench.evaluation as evaluation
    from probseg_bench.experiment import Experiment

    monkeypatch.chdir(tmp_path)
    if target == "train":
        monkeypatch.setattr(Experiment, "train", interrupt)
    else:  # the epoch's score (for pruning) runs, then Ctrl-C while the trained model is scored
        evaluate, calls = evaluation.evaluate, []

        def evaluate_then_interrupt(*args, **kwargs):
            calls.append(1)
            if len(calls) == 2:
                raise KeyboardInterrupt
            return evaluate(*args, **kwargs)

        monkeypatch.setattr(evaluation, "evaluate", evaluate_then_interrupt)
    tune = ["tune", "--model", "punet", "--dataset", "synthetic", "--dataset-param", "n_images=16",
            "--dataset-param", "size=32", "--preset", "quick", "--epochs", "1", "--trials", "2", "--storage", "s.db",
            "--study", "st", "--objective", "val_ged", "--output", "p.toml"]
    code, _, err = run_main(*tune)
    assert code == 130
    assert last_line(err) == (
        "interrupted: the study st in sqlite:///s.db holds 1 trial(s) (1 failed); trial 0, the last one started, is "
        f"recorded as failed (interrupted (Ctrl-C) during {phase}) and kept no training state; rerun the same "
        "command to add trials")
    assert not (tmp_path / "p.toml").exists()


def test_grid_cells_in_local_workers_say_what_each_left_on_disk_after_a_real_sigint(tmp_path):
    """``run --jobs 2``: Ctrl-C (SIGINT to the command) stops both workers' cells, which say what they left."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    args = ["run", "--model", "punet", "--dataset", "synthetic", "--dataset-param", "n_images=16", "--dataset-param",
            "size=32", "--preset", "quick", "--epochs", "200", "--fold", "0", "--fold", "1", "--jobs", "2",
            "--storage", "r.db", "--run-dir", "runs"]
    proc = subprocess.Popen([sys.executable, "-c", CLI, *args], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        start = time.time()
        while len(partial_states(tmp_path)) < 2:  # both cells wrote the state of their first epoch
            assert proc.poll() is None, proc.communicate()
            assert time.time() - start < 240, "the cells did not start"
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    line = last_line(err)
    assert line.startswith("interrupted: 0 cell(s) finished in this run are stored in sqlite:///r.db; "), line
    for fold in (0, 1):
        assert re.search(rf"punet/synthetic d=6 fold {fold}: its training state after epoch 1/200 is saved in "
                         rf"\S*fold{fold}\.partial\.pt; a rerun resumes it from epoch 2", line), line
    assert "Traceback" not in err
    for state in partial_states(tmp_path):  # what the message says is what is on disk
        assert torch.load(state, weights_only=True)["epoch"] == 1


# --- item 9: damaged files the suite reads back: one line, never "weights_only=False" ----------------------------


def test_random_bytes_in_the_saved_training_state_give_one_line_and_deleting_it_restarts(run_main, tmp_path,
                                                                                        monkeypatch):
    import probseg_bench.evaluation as evaluation

    monkeypatch.chdir(tmp_path)
    with monkeypatch.context() as patch:
        patch.setattr(evaluation, "evaluate", interrupt)
        assert run_main(*RUN)[0] == 130
    (state,) = partial_states(tmp_path)
    state.write_bytes(np.random.default_rng(0).bytes(4096))
    code, _, err = run_main(*RUN)
    assert code == 2
    message = last_line(err)
    assert message == (f"error: {Path('runs') / state.relative_to(tmp_path / 'runs')}: the saved training state is "
                       "damaged (not readable as a weights-only torch file of probseg-bench); deleting it restarts "
                       "the fold from its first epoch")
    assert len([line for line in err.splitlines() if line.startswith("error")]) == 1
    one_line_damaged(message, Path("runs") / state.relative_to(tmp_path / "runs"))
    state.unlink()
    code, _, err = run_main(*RUN)
    assert code == 0 and "1 fold(s) trained" in err


class NotPlainData:
    pass


def damaged_states(tmp_path: Path, good: dict) -> dict[str, Path]:
    """Files at a training state's place that are not one: each must be refused as damaged."""
    files = {}

    def put(name: str, content: object) -> None:
        path = tmp_path / f"{name}.partial.pt"
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            torch.save(content, path)
        files[name] = path

    put("random", np.random.default_rng(1).bytes(2000))
    put("empty", b"")
    put("cut-short", (tmp_path / "good.partial.pt").read_bytes()[:300])
    put("a-list", [1, 2, 3])
    put("an-object", {"run": {"run": "a"}, "x": NotPlainData()})  # weights_only refuses it (torch's advice)
    put("no-epoch", {"run": {"run": "a"}})
    put("no-weights", {k: v for k, v in good.items() if k != "model"})
    put("bad-weights", {**good, "model": {"nope": torch.zeros(1)}})
    put("bad-epoch", {**good, "epoch": 99})
    return files


def test_every_kind_of_damaged_training_state_is_one_line(tmp_path):
    from probseg_bench.api import MultiRaterData
    from probseg_bench.training import Objective, TrainConfig, load_training_state, train_fold

    from fakeplugin import TinyLatentModel

    rng = np.random.default_rng(0)
    images = rng.random((12, 1, 16, 16), dtype=np.float32)
    data = MultiRaterData(images=images, masks=(images[:, None, 0] > 0.5).repeat(2, 1).astype(np.uint8),
                          groups=np.arange(12))
    config = TrainConfig(epochs=2, warmup_epochs=1, batch_size=4, lr=1e-2, seed=3)

    def fit(path: Path):
        torch.manual_seed(0)
        return train_fold(TinyLatentModel(latent_dim=2), Objective([]), data.subset(np.arange(8)),
                          data.subset(np.arange(8, 12)), config, torch.device("cpu"), checkpoint=path,
                          checkpoint_key={"run": "a"})

    good = tmp_path / "good.partial.pt"
    fit(good)
    state = torch.load(good, weights_only=True)
    assert state["epoch"] == 2  # written after the last epoch too
    resumed = fit(good)  # a state after the last epoch trains nothing more and gives the same best checkpoint
    assert resumed.best_epoch == state["best_epoch"] and resumed.history[-1].epoch == 2
    for name, path in damaged_states(tmp_path, state).items():
        with pytest.raises(ProbsegError) as info:
            fit(path)
        one_line_damaged(str(info.value), path)
        assert str(info.value).endswith("deleting it restarts the fold from its first epoch"), name
    folder = tmp_path / "a-folder.partial.pt"  # unreadable, not damaged: the operating system's reason
    folder.mkdir()
    with pytest.raises(ProbsegError, match=r"a-folder\.partial\.pt: cannot read the saved training state \(Is a "):
        load_training_state(folder, {"run": "a"})


def test_a_damaged_best_checkpoint_is_one_line_for_analyze(run_main, tmp_path, monkeypatch):
    from probseg_bench.analysis.loading import find_record, load_run
    from probseg_bench.results import ResultsStore

    monkeypatch.chdir(tmp_path)
    assert run_main(*RUN)[0] == 0
    record = find_record(ResultsStore("r.db"), "punet", "synthetic", 6, 0)
    checkpoint = Path(record.checkpoint)
    good = torch.load(checkpoint, weights_only=True)
    checkpoint.write_bytes(np.random.default_rng(2).bytes(3000))
    code, _, err = run_main("analyze", "--model", "punet", "--dataset", "synthetic", "--storage", "r.db",
                            "--output", "an")
    assert code == 2
    one_line_damaged(last_line(err), checkpoint)
    assert "best checkpoint of this stored run is damaged" in last_line(err)
    assert not (tmp_path / "an").exists() or not any((tmp_path / "an").iterdir())
    torch.save({**good, "state_dict": {"nope": torch.zeros(2)}}, checkpoint)  # right run, wrong weights
    with pytest.raises(ProbsegError) as info:
        load_run(record, None, "cpu")
    assert "\n" not in str(info.value) and "does not fit model 'punet'" in str(info.value)
    torch.save({k: v for k, v in good.items() if k != "state_dict"}, checkpoint)
    with pytest.raises(ProbsegError, match="best checkpoint of this stored run is damaged"):
        load_run(record, None, "cpu")


def test_a_damaged_stored_record_is_one_line(run_main, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert run_main(*RUN)[0] == 0
    with sqlite3.connect(tmp_path / "r.db") as db:
        db.execute("UPDATE fold_results SET record = '{\"model\": \"punet\", \"trunc'")
    code, _, err = run_main("leaderboard", "--storage", "r.db")
    assert code == 2
    assert last_line(err).startswith("error: --storage 'r.db': the record in row id 1 is damaged (not a "
                                     "probseg-bench fold record of this version)")
    code, _, err = run_main(*RUN)  # the fold's own record, read by key
    assert code == 2 and "the record of punet/synthetic d=6 fold 0 config " in last_line(err), err
    assert "is damaged" in last_line(err)


def test_ray_cells_are_collected_or_cancelled_and_the_message_names_their_files(tmp_path):
    """Ctrl-C in the Ray driver: a finished cell is collected, the others are cancelled (Ray returns nothing of a
    cancelled task, so the clause names the files and the machines, not epochs)."""
    from probseg_bench.executors.ray import _cancel_ray
    from probseg_bench.interruption import NOTHING_IN_PROGRESS, FoldInterrupted
    from probseg_bench.request import RunRequest

    class FakeRay:
        def __init__(self, done):
            self.done, self.cancelled = done, []

        def wait(self, refs, num_returns, timeout):
            return [r for r in refs if r in self.done], [r for r in refs if r not in self.done]

        def cancel(self, ref):
            self.cancelled.append(ref)

    def cell(fold: int) -> RunRequest:
        return RunRequest(model="punet", dataset="synthetic", latent_dims=(6,), folds=(fold,), run_dir=tmp_path / "rd")

    pending = {"a": cell(0), "b": cell(1)}
    collected = []
    ray = FakeRay(done={"a"})
    exc = _cancel_ray(ray, pending, lambda ref: collected.append(pending.pop(ref)))
    assert isinstance(exc, FoldInterrupted) and isinstance(exc, KeyboardInterrupt)
    assert [c.folds for c in collected] == [(0,)] and ray.cancelled == ["b"]
    assert exc.on_disk == (f"1 cell(s) not finished were cancelled on Ray (punet/synthetic d=6 fold 1): each that had "
                           f"written a training state keeps it (its fold<k>.partial.pt under {tmp_path / 'rd'} on the "
                           "machine that ran it, at its last written epoch), the others left nothing")
    finished = {"c": cell(2)}
    everything_done = _cancel_ray(FakeRay(done={"c"}), finished, finished.pop)
    assert everything_done.on_disk == NOTHING_IN_PROGRESS
