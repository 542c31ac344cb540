"""Training curves (``--log tensorboard``, issue 27): a real tiny protocol run through :class:`CurveReporter`, its
TensorBoard event files read back; resumed runs; a third-party logger found through the hook; the error lines."""

from __future__ import annotations

import importlib.util
import sys
import types
from pathlib import Path
from typing import ClassVar

import pytest

from probseg_bench import hookimpl
from probseg_bench.api import CurveLogger, LoggerSpec, Registry
from probseg_bench.curves import CurveReporter, Curves, epoch_scalars, fold_run_name, trial_run_name
from probseg_bench.errors import ProbsegError
from probseg_bench.plugins import load_plugins, reset_plugins
from probseg_bench.results import FoldKey, ResultsStore
from probseg_bench.training import EpochLog

from fakeplugin import install_fake_distribution

needs_tensorboard = pytest.mark.skipif(importlib.util.find_spec("tensorboard") is None,
                                       reason="tensorboard is not installed (pip install 'probseg-bench[test]')")


@pytest.fixture(autouse=True)
def fresh_plugins():
    reset_plugins()
    yield
    reset_plugins()


def _accumulator(run_dir: Path):
    """TensorBoard's own event reader over the run folder (the ``test`` extra installs tensorboard)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir))
    acc.Reload()
    return acc


def _scalars(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    acc = _accumulator(run_dir)
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


class _Recorder:
    """An inner reporter recording the calls it gets."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def __getattr__(self, name: str):
        return lambda *args: self.calls.append(name)


@needs_tensorboard
def test_a_tiny_run_writes_every_term_at_every_epoch_equal_to_the_record(tmp_path, tiny_preset):
    from probseg_bench.protocol import run_protocol
    from probseg_bench.request import RunRequest, check_request

    request = RunRequest(model="spunet", dataset="synthetic", latent_dims=(2,), folds=(0,), preset=tiny_preset,
                         dataset_params={"n_images": 24, "size": 32}, hyperparameters={"beta": 50.0},
                         protocol_overrides={"epochs": 3}, run_dir=tmp_path / "runs")
    inner = _Recorder()
    with CurveReporter(inner, Curves.open("tensorboard", tmp_path / "tb")) as reporter:
        (record,) = run_protocol(check_request(request), ResultsStore(str(tmp_path / "r.db")), reporter)
    assert inner.calls == ["run_started", "fold_started", "epoch_finished", "epoch_finished", "epoch_finished",
                           "fold_finished"]
    assert not reporter._open  # closed at the fold's end
    name = fold_run_name(record.key, request.variant())
    assert name == f"spunet/synthetic/d2/beta=50.0,epochs=3-{record.config_hash}/fold0"
    assert (tmp_path / "runs" / "spunet" / "synthetic" / "d2" / record.config_hash / "fold0.pt").is_file()
    run_dir = tmp_path / "tb" / name
    assert list(run_dir.glob("events.out.tfevents.*"))
    scalars = _scalars(run_dir)
    history = record.history
    assert [h["epoch"] for h in history] == [1, 2, 3]
    terms = set(history[0]["train_terms"])
    assert {"reconstruction", "kl", "sinkhorn"} <= terms  # spunet: BCE + alpha * KL + beta * Sinkhorn
    expected = {"train/loss": "train_loss", "val/loss": "val_loss", "lr": "lr", "val/effective_rank":
                "val_effective_rank", "time/epoch_seconds": "seconds"}
    assert set(scalars) == set(expected) | {f"train/{t}" for t in terms}
    for tag, field in expected.items():
        assert [s for s, _ in scalars[tag]] == [1, 2, 3], tag
        assert [v for _, v in scalars[tag]] == pytest.approx([h[field] for h in history], rel=1e-6), tag
    for term in terms:
        assert [v for _, v in scalars[f"train/{term}"]] == pytest.approx(
            [h["train_terms"][term] for h in history], rel=1e-6), term
    acc = _accumulator(run_dir)
    (text,) = acc.Tensors("config/text_summary")  # add_text: shown in the Text tab
    config = text.tensor_proto.string_val[0].decode()
    assert text.step == 0
    assert record.config_hash in config and '"fold": 0' in config and '"latent_dim": 2' in config


def _log(epoch: int, value: float, rank: float | None = 1.5) -> EpochLog:
    return EpochLog(epoch=epoch, train_loss=value, train_terms={"reconstruction": value / 2, "kl": value / 4},
                    val_loss=value + 1, val_effective_rank=rank, lr=1e-3 * epoch, seconds=0.5)


@needs_tensorboard
def test_a_resumed_fold_replaces_the_epochs_of_the_interrupted_attempt(tmp_path):
    """Steps are epochs; the attempt that resumes after epoch 2 drops what the killed one logged from epoch 3 on
    (it had logged epochs 1-4 but saved its state at epoch 2), so each epoch is shown once, with the new value."""
    curves = Curves.open("tensorboard", tmp_path)
    key = FoldKey("punet", "synthetic", 2, 1, "0123456789ab")
    with curves.start(fold_run_name(key, "")) as write:
        for epoch in (1, 2, 3, 4):
            write(_log(epoch, 10.0 * epoch))
    with curves.start(fold_run_name(key, ""), first_step=3) as write:
        for epoch in (3, 4, 5):
            write(_log(epoch, 100.0 * epoch))
    scalars = _scalars(tmp_path / "punet/synthetic/d2/defaults-0123456789ab/fold1")
    assert scalars["train/loss"] == [(1, 10.0), (2, 20.0), (3, 300.0), (4, 400.0), (5, 500.0)]
    assert [s for s, _ in scalars["train/kl"]] == [1, 2, 3, 4, 5]


def test_epoch_scalars_and_run_names():
    values = epoch_scalars(_log(2, 8.0, rank=None))
    assert values == {"train/loss": 8.0, "train/reconstruction": 4.0, "train/kl": 2.0, "val/loss": 9.0,
                      "lr": 0.002, "time/epoch_seconds": 0.5}  # no effective rank: a model without a latent prior
    assert epoch_scalars(_log(1, 1.0))["val/effective_rank"] == 1.5
    key = FoldKey("punet-nf", "qubiq-pancreas", 6, 2, "ffeeddccbbaa99")
    assert fold_run_name(key, "params=my dir/best.toml, epochs=2") == \
        "punet-nf/qubiq-pancreas/d6/params=my_dir_best.toml,epochs=2-ffeeddccbbaa99/fold2"
    assert trial_run_name("spunet-lidc/val_loss", 7) == "spunet-lidc_val_loss/trial7"


@needs_tensorboard
def test_a_tuning_trial_writes_under_study_and_trial(tmp_path):
    curves = Curves.open("tensorboard", tmp_path)
    with curves.trial("spunet-lidc-val_loss", 3, config={"alpha": 1.0}) as on_epoch:
        on_epoch(_log(1, 2.0))
    assert _scalars(tmp_path / "spunet-lidc-val_loss" / "trial3")["val/loss"] == [(1, 3.0)]


class _MemoryLogger(CurveLogger):
    opened: ClassVar[list[tuple[Path, str, int]]] = []
    rows: ClassVar[list[tuple[int, dict[str, float]]]] = []

    def __init__(self, log_dir: Path, run_name: str, first_step: int) -> None:
        self.opened.append((log_dir, run_name, first_step))

    def log_scalars(self, step, values):
        self.rows.append((step, dict(values)))

    def close(self):
        self.rows.append((-1, {}))


def test_a_third_party_logger_is_found_through_the_hook(monkeypatch, tmp_path):
    module = types.ModuleType("fake_probseg_mlflow")

    @hookimpl
    def probseg_bench_register_loggers(registry: Registry[LoggerSpec]) -> None:
        registry.add(LoggerSpec(name="memory", description="keeps curves in memory", factory=_MemoryLogger))

    module.probseg_bench_register_loggers = probseg_bench_register_loggers  # type: ignore[attr-defined]
    install_fake_distribution(monkeypatch, "probseg-memory-logger", {"fake_probseg_mlflow": module})
    plugins = load_plugins()
    assert plugins.loggers.names() == ["memory", "tensorboard"]
    assert plugins.loggers.info("memory").distribution == "probseg-memory-logger 1.2.3"
    reporter = CurveReporter(_Recorder(), Curves.open("memory", tmp_path / "curves", plugins))
    key = FoldKey("punet", "synthetic", 2, 0, "abcdef0123456789")
    reporter.fold_started(key, epochs=5, resumed_from=2)
    reporter.epoch_finished(key, _log(3, 4.0))
    reporter.close()
    assert _MemoryLogger.opened == [(tmp_path / "curves", "punet/synthetic/d2/defaults-abcdef0123456789/fold0", 3)]
    assert _MemoryLogger.rows == [(3, epoch_scalars(_log(3, 4.0))), (-1, {})]  # closed once, by close()
    reporter.close()
    assert len(_MemoryLogger.rows) == 2


@needs_tensorboard
def test_a_log_dir_that_cannot_be_written_fails_at_once(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(ProbsegError, match=r"^--log-dir .*file/tb: .*is a file, not a folder; choose another path$"):
        Curves.open("tensorboard", blocker / "tb")


def test_errors_are_one_line_before_any_work(monkeypatch, tmp_path):
    with pytest.raises(ProbsegError, match=r"^--log tensorbord: unknown logger 'tensorbord' \(did you mean "
                                           r"'tensorboard'\?\); known loggers: tensorboard$"):
        Curves.open("tensorbord", tmp_path)
    # the tensorboard package missing: one line with the install command
    monkeypatch.setitem(sys.modules, "tensorboard", None)
    monkeypatch.delitem(sys.modules, "torch.utils.tensorboard", raising=False)
    with pytest.raises(ProbsegError) as info:
        Curves.open("tensorboard", tmp_path / "tb")
    assert str(info.value) == ("--log tensorboard: the tensorboard package is not installed; "
                               "pip install 'probseg-bench[tensorboard]'")
    assert not (tmp_path / "tb").exists()



@needs_tensorboard
def test_run_and_validate_write_curves_under_the_runs_label_and_hash(tmp_path, tiny_preset, run_main, monkeypatch):
    """``--log tensorboard`` from the command line: the request carries it to the protocol (whatever the executor),
    one TensorBoard run per fold named by the label and configuration hash, each epoch's terms in it."""
    monkeypatch.chdir(tmp_path)
    common = ["--dataset", "synthetic", "--preset", tiny_preset, "--epochs", "2", "--fold", "0", "--device", "cpu",
              "--dataset-param", "n_images=24", "--dataset-param", "size=32", "--storage", "r.db",
              "--log", "tensorboard", "--log-dir", "tb"]
    code, _, err = run_main("run", "--model", "punet", "-d", "2", "--format", "json", *common)
    assert code == 0, err
    assert "; training curves under tb (tensorboard --logdir tb)" in " ".join(err.split())
    (record,) = ResultsStore(str(tmp_path / "r.db")).records(["punet"])
    run_dir = tmp_path / "tb" / f"punet/synthetic/d2/epochs=2-{record.config_hash}/fold0"
    scalars = _scalars(run_dir)
    assert [s for s, _ in scalars["val/loss"]] == [1, 2]
    assert [v for _, v in scalars["val/loss"]] == pytest.approx([h["val_loss"] for h in record.history], rel=1e-6)
    assert {"train/loss", "train/reconstruction", "train/kl", "lr", "val/effective_rank"} <= set(scalars)
    code, _, err = run_main("validate", "--model", "punet", "--latent-dim", "2", "--output", "val", "--seed", "1",
                            *[c for c in common if c not in ("--dataset", "synthetic")])
    assert code == 0, err
    # another seed: another configuration, its own run beside the first
    runs = sorted(p.parent.relative_to(tmp_path / "tb").as_posix() for p in (tmp_path / "tb").rglob("events.*"))
    assert len(runs) == 2 and all(r.startswith("punet/synthetic/d2/epochs=2-") and r.endswith("/fold0") for r in runs)


def test_an_unknown_logger_stops_run_before_any_work(tmp_path, run_main, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, _, err = run_main("run", "--model", "punet", "--dataset", "synthetic", "--storage", "r.db",
                            "--log", "tensorbord")
    assert code == 2  # a bad argument, as every other one-line error
    assert "--log tensorbord: unknown logger 'tensorbord' (did you mean 'tensorboard'?)" in err
    assert not (tmp_path / "r.db").exists() and not (tmp_path / "probseg-curves").exists()


@needs_tensorboard
def test_tune_writes_each_trials_curves(tmp_path, tiny_preset, run_main, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, _, err = run_main("tune", "--model", "punet", "--dataset", "synthetic", "--dataset-param", "n_images=24",
                            "--dataset-param", "size=32", "--preset", tiny_preset, "--epochs", "2", "--device", "cpu",
                            "--latent-dim", "2", "--trials", "2", "--param", "beta=0.5:5", "--objective", "val_loss",
                            "--storage", "study.db", "--study", "s", "--log", "tensorboard", "--log-dir", "tb")
    assert code == 0, err
    for n in (0, 1):
        scalars = _scalars(tmp_path / "tb" / "s" / f"trial{n}")
        assert [s for s, _ in scalars["val/loss"]] == [1, 2] and "train/kl" in scalars
