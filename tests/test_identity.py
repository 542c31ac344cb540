"""A result is identified by every setting that changed it (issue 15): protocol overrides and the seed name the
leaderboard row, partial rows are marked and never outrank complete ones, a configuration can be chosen by its
hash in leaderboard / compare / analyze, and a tune study is bound to the protocol its trials were scored under."""

from __future__ import annotations

import json
import tomllib

import pytest

from probseg_bench.analysis.loading import find_record
from probseg_bench.errors import ProbsegError
from probseg_bench.leaderboard import PARTIAL_NOTE, build_leaderboard, render
from probseg_bench.results import FoldRecord, ResultsStore
from probseg_bench.training import TrainingDivergedError

SYNTH = ["--dataset", "synthetic", "--dataset-param", "n_images=40", "--dataset-param", "size=32", "-d", "2"]
SMALL = ["--hp", "filters=4,8", "--hp", "convs_per_block=1"]
SMALL_LABEL = "convs_per_block=1, filters=4,8"


def record(model: str, fold: int, ewd: float, config: str, n_folds: int = 3) -> FoldRecord:
    return FoldRecord(
        model=model, dataset="lidc", latent_dim=6, fold=fold, seed=0, preset="paper", config_hash=config,
        split_hash="s", hyperparameters={}, protocol={"epochs": 1, "n_folds": n_folds},
        metrics={"ged": 2 * ewd, "hm_iou": 1 - ewd, "ewd": ewd, "er": 2.0},
        per_image={"ewd": [ewd + 0.01 * i for i in range(6)]}, test_ids=[str(i) for i in range(6)],
        timings={}, versions={},
    )


def test_a_partial_row_is_marked_and_never_outranks_a_complete_one():
    complete = [record("punet", f, 0.5, "c0mplete") for f in range(3)]
    partial = [record("spunet", 0, 0.1, "partial0")]  # better, but one fold of three
    rows = {r.model: r for r in build_leaderboard(complete + partial)}
    assert rows["punet"].best == {"ged", "hm_iou", "ewd", "er"} and not rows["spunet"].best
    assert rows["spunet"].partial and rows["spunet"].folds_label == "1/3" and rows["punet"].folds_label == "3"
    assert rows["spunet"].p_vs_best is not None  # paired on the fold they share
    table = render(list(rows.values()), "markdown")
    assert "| 1/3 |" in table and PARTIAL_NOTE in table and "**0.100" not in table
    # with no complete row the partial rows are ranked among themselves, still marked 1/3
    alone = build_leaderboard([*partial, record("punet", 1, 0.3, "other000")])
    assert {r.model: r.best for r in alone}["spunet"] >= {"ewd"}
    # rows that share no fold with the best one get no p-value instead of an error
    assert {r.model: r.p_vs_best for r in alone}["punet"] is None


def test_overrides_and_seed_name_the_row_and_a_hash_prefix_selects_it(run_main, tmp_path, monkeypatch, tiny_preset):
    monkeypatch.chdir(tmp_path)
    base = ["run", "--model", "punet", *SYNTH, *SMALL, "--preset", tiny_preset, "--fold", "0", "--format", "json"]
    for extra in ([], ["--epochs", "2"], ["--seed", "1"]):
        code, _, err = run_main(*base, *extra)
        assert code == 0, err
    code, out, _ = run_main("leaderboard", "--format", "json")
    rows = {r["label"]: r for r in json.loads(out)}
    assert set(rows) == {f"punet ({SMALL_LABEL})", f"punet ({SMALL_LABEL}, epochs=2)",
                         f"punet ({SMALL_LABEL}, seed=1)"}
    assert all(r["partial"] and r["folds"] == 1 and r["expected_folds"] == 3 for r in rows.values())
    short, longer = rows[f"punet ({SMALL_LABEL})"]["config"], rows[f"punet ({SMALL_LABEL}, epochs=2)"]["config"]

    code, out, _ = run_main("leaderboard", "--config-hash", longer[:6], "--format", "json")
    assert [r["config"] for r in json.loads(out)] == [longer]
    code, out, _ = run_main("leaderboard")
    assert longer[:8] in out and "1/3" in out
    code, _, err = run_main("leaderboard", "--config-hash", "zzzz")
    assert code == 2 and "--config-hash 'zzzz': no stored configuration starts with it" in err

    code, _, err = run_main("compare", "punet", "punet", "--dataset", "synthetic")
    assert code == 2 and "several configurations" in err and f"punet@{short[:8]}" in err and "MODEL@HASH" in err
    code, out, err = run_main("compare", f"punet@{longer[:8]}", f"punet@{short[:8]}", "--dataset", "synthetic",
                              "--format", "json")
    assert code == 0, err
    (result,) = json.loads(out)
    assert (result["a"], result["b"]) == (f"punet ({SMALL_LABEL}, epochs=2)", f"punet ({SMALL_LABEL})")

    store = ResultsStore()
    with pytest.raises(ProbsegError, match=r"several stored runs match: .*config .*epochs=2.*--config-hash"):
        find_record(store, "punet", "synthetic", None, None)
    assert find_record(store, "punet", "synthetic", 2, None, longer[:5]).config_hash == longer


def test_a_grid_run_refuses_options_the_grid_would_ignore(run_main, tmp_path):
    grid = tmp_path / "g.toml"
    grid.write_text('models = ["punet"]\ndatasets = ["synthetic"]\n')
    for extra in (["--seed", "1"], ["--seed", "0"], ["--fold", "0"], ["--preset", "quick"], ["--hp", "beta=2"]):
        code, _, err = run_main("run", "--config", str(grid), "--storage", str(tmp_path / "r.db"), *extra)
        assert code == 2 and extra[0] in err and "give those in the file" in err, (extra, err)


TUNE = ["tune", "--model", "punet", *SYNTH, "--fix", "filters=4,8", "--fix", "convs_per_block=1",
        "--objective", "val_loss", "--trials", "1"]


def test_a_study_is_bound_to_its_protocol_and_run_params_applies_it(run_main, tmp_path, monkeypatch, tiny_preset):
    monkeypatch.chdir(tmp_path)
    code, _, err = run_main(*TUNE, "--preset", tiny_preset, "--epochs", "2")
    assert code == 0, err
    assert ("tuned under: punet on synthetic (annotators=4, levels=3, n_images=40, seed=0, size=32, structures=3), "
            "d=2, fold 0, seed 0, preset tiny (epochs=2), val_loss, fixed convs_per_block=1, filters=4,8") in err
    toml = tmp_path / "punet-synthetic-val_loss.toml"
    params = tomllib.loads(toml.read_text())
    assert params["protocol"]["preset"] == tiny_preset and params["protocol"]["overrides"] == {"epochs": 2}
    assert params["protocol"]["dataset_params"] == {"annotators": 4, "levels": 3, "n_images": 40, "seed": 0,
                                                   "size": 32, "structures": 3}
    assert params["hyperparameters"]["filters"] == "4,8" and "beta" in params["hyperparameters"]

    # resuming the same study under other settings is refused in one line, naming what differs
    for extra in (["--preset", tiny_preset], ["--preset", tiny_preset, "--epochs", "2", "--seed", "1"]):
        code, _, err = run_main(*TUNE, *extra)
        assert code == 2 and "was made under other settings" in err and "--study NAME" in err
        assert len(err.strip().splitlines()) == 1
    assert "protocol_overrides.epochs 2 -> None" in run_main(*TUNE, "--preset", tiny_preset)[2]
    code, _, err = run_main(*TUNE, "--preset", tiny_preset, "--epochs", "2")  # the same settings resume it
    assert code == 0, err
    code, out, _ = run_main("tune", "--model", "punet", "--dataset", "synthetic", "--objective", "val_loss", "--show")
    assert "2 trials" in out and "preset tiny (epochs=2)" in out

    # run --params takes the preset, the epochs and the dataset parameters the parameters were tuned under
    code, _, err = run_main("run", "--model", "punet", "--dataset", "synthetic", "-d", "2", "--fold", "0",
                            "--params", str(toml), "--format", "json")
    assert code == 0, err
    (rec,) = ResultsStore().records()
    assert rec.preset == tiny_preset and rec.protocol["epochs"] == 2 and rec.dataset_params["size"] == 32
    assert rec.variant == f"params={toml.name}, epochs=2"
    # a setting given on the command line wins, with a note
    code, _, err = run_main("run", "--model", "punet", "--dataset", "synthetic", "-d", "2", "--fold", "0",
                            "--params", str(toml), "--epochs", "1", "--format", "json")
    assert code == 0, err
    assert "tuned with epochs=2, run with epochs=1 (as the command line asks)" in err


def constant_objective(experiment, space, fixed, objective, fold, latent_dim, on_trial=None):
    def run_trial(trial):
        for p in space:
            p.suggest(trial)
        return 1.0
    return run_trial


def diverging_objective(experiment, space, fixed, objective, fold, latent_dim, on_trial=None):
    def run_trial(trial):
        raise TrainingDivergedError("non-finite loss at epoch 1, step 1 (term: kl)")
    return run_trial


@pytest.mark.parametrize(("objective", "message"), [
    (constant_objective, "all 3 complete trials scored val_loss 1.0000: the study learned nothing"),
    (diverging_objective, "all 3 trial(s) failed"),
])
def test_a_degenerate_study_says_so_and_writes_no_parameters(run_main, tmp_path, monkeypatch, tiny_preset,
                                                             objective, message):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("probseg_bench.tuning.workers.make_objective", objective)
    code, out, err = run_main(*TUNE[:-1], "3", "--preset", tiny_preset)
    assert code == 2 and message in err and "no best parameters to write" in err
    assert "best trial" not in out and not (tmp_path / "punet-synthetic-val_loss.toml").exists()
    code, _, err = run_main("tune", "--model", "punet", "--dataset", "synthetic", "--objective", "val_loss", "--show")
    assert code == 0 and message in err


def test_run_params_takes_the_tuned_latent_dim_and_seed(run_main, tmp_path, monkeypatch, tiny_preset):
    """A new user's trial: a study tuned at d=4 with seed 1 was run by `run --params` at d=6, seed 0, silently."""
    monkeypatch.chdir(tmp_path)
    code, out, err = run_main("tune", "--model", "punet", "--dataset", "synthetic", "--dataset-param", "n_images=40",
                              "--dataset-param", "size=32", "--fix", "filters=4,8", "--fix", "convs_per_block=1",
                              "--objective", "val_loss", "--trials", "1", "--preset", tiny_preset, "-d", "3",
                              "--seed", "1", "--study", "d3")
    assert code == 0, err
    assert "run --model punet --dataset synthetic --params d3.toml (the file applies preset tiny, d=3, seed 1" in out
    code, _, err = run_main("run", "--model", "punet", "--dataset", "synthetic", "--params", "d3.toml", "--fold", "0",
                            "--format", "json")
    assert code == 0, err
    (rec,) = ResultsStore().records()
    assert (rec.latent_dim, rec.seed, rec.preset) == (3, 1, tiny_preset)
    code, _, err = run_main("run", "--model", "punet", "--dataset", "synthetic", "--params", "d3.toml", "--fold", "0",
                            "-d", "2", "--hp", "beta=2", "--format", "json")
    assert code == 0, err
    assert "tuned at d=3, run at d=2 (as the command line asks)" in err and "--hp replaces the tuned beta" in err
    bad = tmp_path / "bad.toml"
    bad.write_text('model = "punet"\n[hyperparameters]\nbetta = 2\n')
    code, _, err = run_main("run", "--model", "punet", "--dataset", "synthetic", "--params", str(bad))
    assert code == 2 and f"{bad}: [hyperparameters]: model 'punet' and its regularizers have no hyperparameter" in err


def test_reading_commands_create_no_store_and_name_typos(run_main, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for args in (["leaderboard"], ["leaderboard", "--storage", "probseg-result.db"],
                 ["compare", "punet", "spunet", "--dataset", "lidc-sample"],
                 ["analyze", "--model", "punet", "--dataset", "lidc-sample"]):
        code, _, err = run_main(*args)
        assert code == 2 and "no results store at" in err, (args, err)
    assert list(tmp_path.iterdir()) == []
    store = ResultsStore(str(tmp_path / "r.db"))
    for fold in range(3):
        store.add(record("spunet", fold, 0.3, "aaaa1111"))
    code, _, err = run_main("leaderboard", "--storage", "r.db", "--model", "spnet")
    assert code == 2 and "--model spnet: no records in" in err and "did you mean 'spunet'" in err
    code, _, err = run_main("leaderboard", "--storage", "r.db", "--dataset", "lidcc")
    assert code == 2 and "did you mean 'lidc'" in err
    code, _, err = run_main("compare", "spunet", "spunet@aaaa", "--dataset", "lidc", "--storage", "r.db")
    assert code == 2 and "select the same configuration" in err
    store.add(record("punet", 0, 0.5, "bbbb2222"))
    code, _, err = run_main("compare", "spunet", "punet", "--dataset", "lidc", "--storage", "r.db",
                            "--config-hash", "aaaa")
    assert code == 2 and "(only configurations kept by --config-hash aaaa)" in err
    code, out, _ = run_main("leaderboard", "--storage", "r.db", "--pivot", "--format", "markdown")
    assert "[1/3 folds]" in out and PARTIAL_NOTE in out


def test_a_negative_regularizer_weight_is_refused(run_main, tmp_path):
    code, _, err = run_main("run", "--model", "punet", "--dataset", "synthetic", "--hp", "beta=-1", "--storage",
                            str(tmp_path / "r.db"))
    assert code == 2 and "hyperparameter 'beta': expected a value >= 0, got -1.0" in err  # the declared minimum
    assert not (tmp_path / "r.db").exists()


def test_tune_names_a_bad_fixed_value_and_an_interrupted_trial(run_main, tmp_path, monkeypatch, tiny_preset):
    monkeypatch.chdir(tmp_path)
    code, _, err = run_main("tune", "--model", "punet", *SYNTH, "--fix", "beta=abc", "--preset", tiny_preset)
    assert code == 2 and "hyperparameter 'beta': expected a float, got 'abc'" in err

    from probseg_bench.experiment import Experiment

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(Experiment, "train", interrupted)
    code, _, err = run_main(*TUNE, "--preset", tiny_preset)
    assert code == 130 and ("trial 0, the last one started, is recorded as failed (interrupted (Ctrl-C) during "
                            "training)") in err  # read back from the study (issue 25)
    assert "Traceback" not in err
    code, _, err = run_main("tune", "--model", "punet", "--dataset", "synthetic", "--objective", "val_loss", "--show")
    assert "trial 0 failed: interrupted (Ctrl-C) during training" in err


def test_a_model_revision_is_part_of_the_configuration_hash(monkeypatch, tiny_preset):
    """A fix that changes what a model trains raises its ModelSpec.revision (hpunet: 1, its lambda-free validation
    loss), so results stored before the fix are not reused as the fixed model's; revision 0 keeps old hashes."""
    import hashlib
    from dataclasses import replace

    from probseg_bench.plugins import get_plugins
    from probseg_bench.protocol import RunPlan
    from probseg_bench.request import RunRequest, check_request

    plugins = get_plugins()
    assert plugins.models.get("hpunet").revision == 1 and plugins.models.get("punet").revision == 0
    request = RunRequest(model="punet", dataset="synthetic", latent_dims=(2,), folds=(0,), preset=tiny_preset,
                         dataset_params={"n_images": 40, "size": 32})
    plan = RunPlan.prepare(check_request(request, plugins))
    payload = {"seed": 0, "protocol": plan.protocol, "hyperparameters": plan.hyperparameters,
               "split": plan.exp.splits.split_hash, "dataset": plan.exp.dataset_params}
    digest = hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:12]
    assert plan.legacy_hash == digest  # revision 0: the hash of versions before data fingerprints
    payload["data"] = plan.exp.data_fingerprint  # the data's content is part of the identity (issue 25)
    assert plan.config_hash == hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()
                                              ).hexdigest()[:12]
    monkeypatch.setitem(plugins.models._items, "punet", replace(plugins.models.get("punet"), revision=1))
    revised = RunPlan.prepare(check_request(request, plugins)).config_hash
    assert revised != plan.config_hash
