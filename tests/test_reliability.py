"""Runs that survive kills, divergence, interruptions and concurrent writers without losing or duplicating a
result; the same command and seed give the same numbers."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from probseg_bench.api import MultiRaterData
from probseg_bench.cli import app
from probseg_bench.errors import ProbsegError
from probseg_bench.experiment import Experiment
from probseg_bench.results import ResultsStore
from probseg_bench.training import Objective, TrainConfig, TrainingDivergedError, train_fold
from probseg_regularizers.kl import KLDivergence

from fakeplugin import TinyLatentModel

SYNTH = ["--dataset", "synthetic", "--dataset-param", "n_images=40", "--dataset-param", "size=32",
         "--hp", "filters=4,8", "--hp", "convs_per_block=1", "-d", "2"]
WRAPPER = (
    "import sys\n"
    "from probseg_bench.presets import PRESETS, Preset\n"
    "PRESETS['six'] = Preset(name='six', description='t', epochs=6, warmup_epochs=1, batch_size=4,"
    " n_eval_samples=4)\n"
    "PRESETS['two'] = Preset(name='two', description='t', epochs=2, warmup_epochs=1, batch_size=4,"
    " n_eval_samples=4)\n"
    "from probseg_bench.cli import main\n"
    "sys.argv = ['probseg-bench'] + sys.argv[1:]\n"
    "main()\n"
)


def synthetic(n: int = 12, seed: int = 0) -> MultiRaterData:
    rng = np.random.default_rng(seed)
    images = rng.random((n, 1, 16, 16), dtype=np.float32)
    masks = (images[:, None, 0] > rng.uniform(0.3, 0.7, (n, 3, 1, 1))).astype(np.uint8)
    return MultiRaterData(images=images, masks=masks, groups=np.arange(n))


class Stop(Exception):
    pass


def fit(checkpoint: Path | None, stop_after: int | None = None, epochs: int = 4):
    data = synthetic()
    torch.manual_seed(7)
    model = TinyLatentModel(latent_dim=2)
    config = TrainConfig(epochs=epochs, warmup_epochs=1, batch_size=4, lr=1e-2, seed=3)

    def on_epoch(log):
        if stop_after is not None and log.epoch == stop_after:
            raise Stop

    return train_fold(model, Objective([("kl", 1.0, KLDivergence())]), data.subset(np.arange(8)),
                      data.subset(np.arange(8, 12)), config, torch.device("cpu"), on_epoch=on_epoch,
                      checkpoint=checkpoint, checkpoint_key={"run": "a"})


def test_a_fold_resumed_from_its_epoch_checkpoint_ends_exactly_as_an_uninterrupted_one(tmp_path):
    straight = fit(None)
    with pytest.raises(Stop):
        fit(tmp_path / "fold.partial.pt", stop_after=2)
    assert (tmp_path / "fold.partial.pt").is_file()
    resumed = fit(tmp_path / "fold.partial.pt")
    assert [h.val_loss for h in resumed.history] == [h.val_loss for h in straight.history]
    assert [h.train_loss for h in resumed.history] == [h.train_loss for h in straight.history]
    assert resumed.best_epoch == straight.best_epoch
    for k, v in straight.best_state.items():
        assert torch.equal(resumed.best_state[k], v), k
    with pytest.raises(ProbsegError, match="a checkpoint of another run"):
        data = synthetic()
        train_fold(TinyLatentModel(latent_dim=2), Objective([]), data.subset(np.arange(8)),
                   data.subset(np.arange(8, 12)), TrainConfig(epochs=1, warmup_epochs=1, batch_size=4),
                   torch.device("cpu"), checkpoint=tmp_path / "fold.partial.pt", checkpoint_key={"run": "b"})


def run_cli(cwd: Path, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", WRAPPER, *args], cwd=cwd, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def wait_for(condition, proc: subprocess.Popen, timeout: float = 120.0) -> None:
    start = time.time()
    while not condition():
        assert proc.poll() is None, f"finished before the kill point: {proc.communicate()}"
        assert time.time() - start < timeout
        time.sleep(0.01)


def test_sigkill_at_several_points_then_rerun_gives_the_uninterrupted_records(tmp_path):
    args = ["run", "--model", "punet", "--preset", "six", *SYNTH]
    clean = tmp_path / "clean"
    clean.mkdir()
    proc = run_cli(clean, *args)
    assert proc.wait(timeout=300) == 0, proc.communicate()
    expected = {r.key: r for r in ResultsStore(str(clean / "probseg-results.db")).records()}
    assert len(expected) == 3

    killed = tmp_path / "killed"
    killed.mkdir()
    db = killed / "probseg-results.db"

    def partials() -> list[Path]:
        return list(killed.rglob("*.partial.pt"))

    def stored() -> int:
        return len(ResultsStore(str(db)).records()) if db.exists() else 0

    kill_points = [
        lambda: bool(partials()),  # mid fold 0, after an epoch
        lambda: stored() >= 1,  # right after fold 0's record
        lambda: stored() >= 1 and bool(partials()),  # mid fold 1
    ]
    for point in kill_points:
        proc = run_cli(killed, *args)
        wait_for(point, proc)
        os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait() == -signal.SIGKILL
        records = ResultsStore(str(db)).records()
        assert len({r.key for r in records}) == len(records)  # never a duplicate
    proc = run_cli(killed, *args)
    assert proc.wait(timeout=300) == 0, proc.communicate()
    got = {r.key: r for r in ResultsStore(str(db)).records()}
    assert got.keys() == expected.keys()
    for key, record in got.items():  # resumed folds give the same numbers as uninterrupted ones (CPU)
        assert record.per_image["ewd"] == expected[key].per_image["ewd"]
    assert not partials()


def test_a_diverging_fold_is_recorded_as_failed_and_the_others_go_on(monkeypatch, tmp_path, tiny_preset):
    monkeypatch.chdir(tmp_path)
    original = Experiment.train

    def diverge_on_fold_1(self, latent_dim, fold, *args, **kwargs):
        if fold == 1:
            raise TrainingDivergedError("non-finite loss at epoch 1, step 2 (term: kl); lower ...")
        return original(self, latent_dim, fold, *args, **kwargs)

    monkeypatch.setattr(Experiment, "train", diverge_on_fold_1)
    result = CliRunner().invoke(app, ["run", "--model", "punet", "--preset", tiny_preset, *SYNTH])
    assert result.exit_code == 0, result.output
    assert "fold 1: FAILED, recorded as failed: non-finite loss at epoch 1, step 2 (term: kl)" in result.stderr
    store = ResultsStore()
    assert sorted(r.fold for r in store.records()) == [0, 2]
    (failed,) = [r for r in store.records(include_failed=True) if r.status == "failed"]
    assert failed.fold == 1 and failed.failure.startswith("non-finite loss")
    board = CliRunner().invoke(app, ["leaderboard", "--format", "json"])
    assert '"folds": 2' in board.stdout
    monkeypatch.setattr(Experiment, "train", original)
    again = CliRunner().invoke(app, ["run", "--model", "punet", "--preset", tiny_preset, *SYNTH])
    assert again.exit_code == 0 and len(store.records()) == 2
    retry = CliRunner().invoke(app, ["run", "--model", "punet", "--preset", tiny_preset, *SYNTH, "--retry-failed"])
    assert retry.exit_code == 0 and sorted(r.fold for r in store.records()) == [0, 1, 2]


def test_a_real_divergence_names_epoch_step_and_term(monkeypatch, tmp_path, tiny_preset):
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["run", "--model", "punet", "--preset", tiny_preset, *SYNTH,
                                      "--hp", "beta=1e39", "--fold", "0"])
    assert result.exit_code == 0, result.output
    assert "FAILED, recorded as failed: non-finite gradient at epoch 1, step 1 (term: gradient)" in result.stderr
    assert ResultsStore().records() == []


def test_extreme_encoder_init_trains_without_diverging():
    data = synthetic()
    from probseg_models.punet import ProbabilisticUNet

    torch.manual_seed(0)
    model = ProbabilisticUNet(latent_dim=3, filters="4,8", convs_per_block=1)
    with torch.no_grad():
        model.posterior_net.to_params.bias[3:].fill_(1e4)  # log sigma of q saturates at +10
        model.prior_net.to_params.bias[3:].fill_(-1e4)  # log sigma of p saturates at -10
    result = train_fold(model, Objective([("kl", 1.0, KLDivergence())]), data.subset(np.arange(8)),
                        data.subset(np.arange(8, 12)), TrainConfig(epochs=2, warmup_epochs=1, batch_size=4),
                        torch.device("cpu"))
    assert all(np.isfinite(h.train_loss) and np.isfinite(h.val_loss) for h in result.history)


def test_same_command_same_seed_same_numbers(monkeypatch, tmp_path, tiny_preset):
    numbers = []
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        monkeypatch.chdir(tmp_path / name)
        result = CliRunner().invoke(app, ["run", "--model", "spunet", "--preset", tiny_preset, *SYNTH,
                                          "--fold", "0", "--seed", "5"])
        assert result.exit_code == 0, result.output
        (record,) = ResultsStore().records()
        numbers.append((record.per_image, record.split_hash, record.seed, record.versions["torch"]))
    assert numbers[0] == numbers[1]


def test_ctrl_c_stops_with_one_line_saying_what_was_saved(monkeypatch, tmp_path, tiny_preset):
    monkeypatch.chdir(tmp_path)

    def interrupted(self, *args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(Experiment, "train", interrupted)
    result = CliRunner().invoke(app, ["run", "--model", "punet", "--preset", tiny_preset, *SYNTH])
    assert result.exit_code == 130
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines[-1].startswith("interrupted: 0 fold(s) finished in this run are stored in sqlite:///")
    assert "rerun the same command to resume" in lines[-1]


def test_two_runs_write_one_sqlite_store_at_once(tmp_path):
    procs = [run_cli(tmp_path, "run", "--model", model, "--preset", "two", *SYNTH)
             for model in ("punet", "spunet")]
    for p in procs:
        assert p.wait(timeout=300) == 0, p.communicate()
    records = ResultsStore(str(tmp_path / "probseg-results.db")).records()
    assert sorted((r.model, r.fold) for r in records) == [(m, f) for m in ("punet", "spunet") for f in range(3)]


@pytest.mark.parametrize(("interval", "written_after"), [(0.0, [1, 2, 3, 4]), (3600.0, [1, 4])])
def test_the_training_state_is_written_after_the_first_epoch_then_at_most_every_interval(
        tmp_path, monkeypatch, interval, written_after):
    """Short epochs (the quick preset's take ~0.2 s) do not write their state every epoch; always after the last
    epoch (so a fold interrupted while it is evaluated is not trained again, issue 25)."""
    import probseg_bench.training as training

    written = []
    monkeypatch.setattr(training, "save_training_state", lambda path, state: written.append(state["epoch"]))
    data = synthetic()
    torch.manual_seed(7)
    config = TrainConfig(epochs=4, warmup_epochs=1, batch_size=4, lr=1e-2, seed=3, checkpoint_interval_s=interval)
    train_fold(TinyLatentModel(latent_dim=2), Objective([("kl", 1.0, KLDivergence())]), data.subset(np.arange(8)),
               data.subset(np.arange(8, 12)), config, torch.device("cpu"), checkpoint=tmp_path / "f.partial.pt",
               checkpoint_key={"run": "a"})
    assert written == written_after
