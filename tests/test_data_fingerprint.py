"""A result is identified by the data it was computed on (issue 25, item 2): the content fingerprint, a rerun on
changed data, the results store's migration, the leaderboard's data versions, and every other place that reuses a
stored thing (saved training state, tuning studies, analysis / validation of a stored checkpoint, compare)."""

from __future__ import annotations

import json
import sqlite3
from dataclasses import asdict, replace
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from probseg_bench.api import MultiRaterData
from probseg_bench.data.converted import read_converted, write_converted
from probseg_bench.data.fingerprint import data_fingerprint, short
from probseg_bench.errors import ProbsegError
from probseg_bench.results import ResultsStore

CASES = 10
SIZE = 32


def write_folder(root: Path, empty_masks: bool = False, nifti_case: bool = True) -> Path:
    """``CASES`` cases of a ``folder`` dataset: a 32 x 32 PNG image and two PNG masks (offset squares: the
    annotators disagree); the last case as NIfTI. ``empty_masks``: every mask empty (the issue's edit)."""
    rng = np.random.default_rng(0)
    for i in range(CASES):
        case = root / f"case{i}"
        case.mkdir(parents=True, exist_ok=True)
        image = rng.integers(0, 256, (SIZE, SIZE), dtype=np.uint8)
        masks = []
        for a in range(2):
            m = np.zeros((SIZE, SIZE), dtype=np.uint8)
            if not empty_masks:
                m[8 + 2 * a : 20 + 2 * a, 10 : 22 - a] = 255
            masks.append(m)
        for old in case.iterdir():
            old.unlink()
        if nifti_case and i == CASES - 1:
            nib.save(nib.Nifti1Image(image.astype(np.float32) / 255, np.eye(4)), str(case / "image.nii.gz"))
            for a, m in enumerate(masks):
                nib.save(nib.Nifti1Image((m > 0).astype(np.uint8), np.eye(4)), str(case / f"mask_{a}.nii.gz"))
        else:
            Image.fromarray(image).save(case / "image.png")
            for a, m in enumerate(masks):
                Image.fromarray(m).save(case / f"mask_{a}.png")
    return root


def run_args(root: Path, tmp_path: Path, preset: str, *extra: str) -> list[str]:
    return ["run", "--model", "punet", "--dataset", "folder", "--data-root", str(root), "--dataset-param",
            f"size={SIZE}", "--preset", preset, "--epochs", "1", "-d", "2", "--fold", "0", "--storage",
            str(tmp_path / "r.db"), "--run-dir", str(tmp_path / "runs"), "--format", "json", *extra]


def request_for(root: Path, tmp_path: Path, preset: str):
    from probseg_bench.request import RunRequest

    return RunRequest(model="punet", dataset="folder", latent_dims=(2,), folds=(0,), preset=preset,
                      data_root=root, dataset_params={"size": SIZE}, protocol_overrides={"epochs": 1},
                      run_dir=tmp_path / "runs")


def small(**changes) -> MultiRaterData:
    rng = np.random.default_rng(1)
    fields = dict(images=rng.random((4, 1, 8, 8), dtype=np.float32),
                  masks=(rng.random((4, 3, 8, 8)) > 0.5).astype(np.uint8),
                  groups=np.array(["p0", "p0", "p1", "p2"]), metadata={"case": np.array(["a", "b", "c", "d"])})
    fields.update(changes)
    return MultiRaterData(**fields)


# ------------------------------------------------------------------------------------------------ fingerprint
def test_the_fingerprint_changes_with_every_part_of_the_content_and_only_with_it():
    base = small()
    fp = data_fingerprint(base)
    assert len(fp) == 64 and int(fp, 16) >= 0 and data_fingerprint(small()) == fp  # deterministic
    masks = base.masks.copy()
    masks[3, 2, 7, 7] ^= 1  # one pixel of one annotator
    images = base.images.copy()
    images[0, 0, 0, 0] = np.nextafter(images[0, 0, 0, 0], 2)  # one ulp of one pixel
    changed = [
        small(masks=masks), small(images=images), small(masks=np.zeros_like(base.masks)),
        small(images=base.images.astype(np.float16)),  # the same values stored in another dtype
        small(groups=np.array(["p0", "p1", "p1", "p2"])), small(metadata={"case": np.array(["a", "b", "d", "c"])}),
        small(metadata={}), small(images=base.images[:, :, :, ::-1].copy()),
        small(images=base.images[:3], masks=base.masks[:3], groups=base.groups[:3],
              metadata={"case": np.array(["a", "b", "c"])}),
    ]
    prints = [data_fingerprint(d) for d in changed]
    assert fp not in prints and len(set(prints)) == len(prints)
    assert short(fp) == fp[:8] and short(None) == "unrecorded"
    # text columns: the same text as objects or unicode is the same data; integers are not their text
    assert data_fingerprint(small(groups=np.array(["p0", "p0", "p1", "p2"], dtype=object))) == fp
    numeric = small(groups=np.array([0, 0, 1, 2]))
    assert data_fingerprint(numeric) != data_fingerprint(small(groups=np.array(["0", "0", "1", "2"])))


def test_a_memory_mapped_set_has_the_fingerprint_of_the_same_data_in_memory(tmp_path):
    data = small()
    write_converted(data, tmp_path / "conv", "x", {}, "test", image_dtype="float32")
    mapped, _ = read_converted(tmp_path / "conv")
    assert isinstance(mapped.images, np.memmap)
    assert data_fingerprint(mapped) == data_fingerprint(data)
    write_converted(data, tmp_path / "half", "x", {}, "test", image_dtype="float16")
    assert data_fingerprint(read_converted(tmp_path / "half")[0]) != data_fingerprint(data)  # float16 is other data


# ------------------------------------------------------------------------------------------- run: the issue
def test_a_rerun_on_changed_masks_trains_anew_and_the_leaderboard_shows_both_versions(run_main, tmp_path,
                                                                                     tiny_preset):
    root = write_folder(tmp_path / "data")
    code, out, err = run_main(*run_args(root, tmp_path, tiny_preset))
    assert code == 0, err
    (first,) = json.loads(out)
    code, _, err = run_main(*run_args(root, tmp_path, tiny_preset))
    assert code == 0 and "already in the results store, skipped" in err  # same data: reused
    assert "data differ" not in err

    write_folder(root, empty_masks=True)  # the issue: every mask replaced by an empty one
    code, out, err = run_main(*run_args(root, tmp_path, tiny_preset))
    assert code == 0, err
    assert "already in the results store" not in err
    notes = [line for line in err.splitlines() if "data differ" in line]
    assert len(notes) == 1 and f"stored: data {short(first['data_fingerprint'])}" in notes[0]
    assert "training anew" in notes[0]
    (second,) = json.loads(out)
    assert second["config"] != first["config"] and second["data_fingerprint"] != first["data_fingerprint"]
    assert second["annotator_diversity_mean"] == 0.0 and first["annotator_diversity_mean"] > 0.1

    records = ResultsStore(str(tmp_path / "r.db")).records()
    assert sorted(r.data_fingerprint for r in records) == sorted([first["data_fingerprint"],
                                                                  second["data_fingerprint"]])
    with sqlite3.connect(tmp_path / "r.db") as db:
        column = db.execute("SELECT data_fingerprint, schema_version FROM fold_results ORDER BY id").fetchall()
    assert column == [(first["data_fingerprint"], 2), (second["data_fingerprint"], 2)]

    code, out, err = run_main("leaderboard", "--storage", str(tmp_path / "r.db"), "--format", "json")
    rows = json.loads(out)
    assert {r["data_versions"] for r in rows} == {2}
    labels = {r["data_fingerprint"]: r["dataset_label"] for r in rows}
    assert labels == {fp: f"folder (size={SIZE}) [data {fp[:8]}]"
                      for fp in (first["data_fingerprint"], second["data_fingerprint"])}
    assert all(r["p_vs_best"] is None for r in rows)  # never paired across versions
    code, out, err = run_main("leaderboard", "--storage", str(tmp_path / "r.db"), "--format", "markdown")
    assert code == 0, err
    warning = [line for line in out.splitlines() if line.startswith("warning: folder")]
    assert len(warning) == 1 and "2 different versions of its data" in warning[0]
    assert f"[data {first['data_fingerprint'][:8]}]: punet" in warning[0]
    assert f"[data {second['data_fingerprint'][:8]}]: punet" in warning[0]
    code, out, err = run_main("leaderboard", "--storage", str(tmp_path / "r.db"), "--pivot", "--format", "markdown")
    assert code == 0 and "2 different versions of its data" in out
    # one version selected: nothing to flag
    code, out, _ = run_main("leaderboard", "--storage", str(tmp_path / "r.db"), "--format", "json",
                            "--config-hash", first["config"][:8])
    (row,) = json.loads(out)
    assert row["data_versions"] == 1 and row["dataset_label"] == f"folder (size={SIZE})"

    # compare refuses to pair the two versions
    code, _, err = run_main("compare", f"punet@{first['config'][:8]}", f"punet@{second['config'][:8]}",
                            "--dataset", "folder", "--storage", str(tmp_path / "r.db"))
    assert code == 2 and "not evaluated on the same data" in err


def test_a_result_follows_the_loaded_content_not_the_path_or_the_file_format(run_main, tmp_path, tiny_preset):
    a = write_folder(tmp_path / "a")
    assert run_main(*run_args(a, tmp_path, tiny_preset))[0] == 0
    # another folder whose NIfTI case is stored as PNG: the same images and masks once loaded, so the same result
    same = write_folder(tmp_path / "same", nifti_case=False)
    code, _, err = run_main(*run_args(same, tmp_path, tiny_preset))
    assert code == 0 and "already in the results store, skipped" in err
    # another folder with one annotator's mask of one case one row taller: another result
    other = write_folder(tmp_path / "other")
    mask = np.asarray(Image.open(other / "case0" / "mask_1.png")).copy()
    mask[22, 10:21] = 255  # the square spans rows 10..21
    Image.fromarray(mask).save(other / "case0" / "mask_1.png")
    code, _, err = run_main(*run_args(other, tmp_path, tiny_preset))
    assert code == 0 and "already in the results store" not in err and "data differ" in err


# ------------------------------------------------------------------------------- saved state, analysis, tuning
def test_saved_training_state_and_checkpoints_of_other_data_are_never_used(tmp_path, tiny_preset):
    from probseg_bench.analysis.loading import load_run
    from probseg_bench.protocol import RunPlan, run_protocol
    from probseg_bench.request import check_request

    root = write_folder(tmp_path / "data")
    request = request_for(root, tmp_path, tiny_preset)
    store = ResultsStore(str(tmp_path / "r.db"))
    (record,) = run_protocol(check_request(request), store)
    old = RunPlan.prepare(check_request(request))
    assert record.data_fingerprint == old.exp.data_fingerprint and record.settings_hash == old.settings_hash
    partial = old.folder(2) / "fold0.partial.pt"
    partial.write_bytes(b"training state of the old data")  # would make a resume fail if it were read
    assert load_run(record, root, "cpu").record is record

    write_folder(root, empty_masks=True)
    with pytest.raises(ProbsegError, match=r"is not the data the stored run was computed on .*the data changed"):
        load_run(record, root, "cpu")  # analyze / validate / the benchmarks evaluate a stored checkpoint so
    new = RunPlan.prepare(check_request(request))
    assert new.folder(2) != old.folder(2) and new.settings_hash == old.settings_hash
    assert new.config_hash != old.config_hash
    (again,) = run_protocol(check_request(request), store)
    assert again.config_hash == new.config_hash and Path(again.checkpoint).parent == new.folder(2)
    assert partial.read_bytes() == b"training state of the old data"  # untouched, unread


def test_a_tuning_study_refuses_other_data_and_studies_made_before_fingerprints(tmp_path, tiny_preset):
    from probseg_bench.tuning import SETTINGS_ATTR, TuneJob, open_study, prepare_study

    root = write_folder(tmp_path / "data")
    storage = str(tmp_path / "t.db")
    job = TuneJob(request_for(root, tmp_path, tiny_preset), "s", storage, objective="val_loss")
    experiment, study, _ = prepare_study(job, 0)
    assert study.user_attrs[SETTINGS_ATTR]["data"] == experiment.data_fingerprint
    prepare_study(job, 0)  # same data: resumes
    write_folder(root, empty_masks=True)
    with pytest.raises(ProbsegError, match=r"study 's' was made under other settings \(the data differ \(content "
                                           rf"fingerprint {experiment.data_fingerprint[:8]} -> [0-9a-f]{{8}}\)\)"):
        prepare_study(job, 0)
    legacy = open_study("old", storage, 0, objective="val_loss")
    settings = dict(study.user_attrs[SETTINGS_ATTR])
    del settings["data"]
    legacy.set_user_attr(SETTINGS_ATTR, settings)
    with pytest.raises(ProbsegError, match="study 'old' was made before studies recorded the data"):
        prepare_study(replace(job, study="old"), 0)


# ------------------------------------------------------------------------- records before fingerprints
OLD_SCHEMA = """CREATE TABLE fold_results (
    id INTEGER NOT NULL PRIMARY KEY, model VARCHAR(128) NOT NULL, dataset VARCHAR(128) NOT NULL,
    latent_dim INTEGER NOT NULL, fold INTEGER NOT NULL, config_hash VARCHAR(32) NOT NULL, seed INTEGER NOT NULL,
    preset VARCHAR(64) NOT NULL, split_hash VARCHAR(32) NOT NULL, created_at FLOAT NOT NULL,
    schema_version INTEGER NOT NULL, record TEXT NOT NULL,
    CONSTRAINT uq_fold_cell UNIQUE (model, dataset, latent_dim, fold, config_hash))"""


def legacy_store(path: Path, record) -> None:
    """A store of the version before data fingerprints (schema 1) holding ``record`` as that version wrote it."""
    fields = asdict(record)
    del fields["data_fingerprint"], fields["settings_hash"]
    with sqlite3.connect(path) as db:
        db.execute(OLD_SCHEMA)
        db.execute("INSERT INTO fold_results (model, dataset, latent_dim, fold, config_hash, seed, preset, split_hash,"
                   " created_at, schema_version, record) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 1, ?)",
                   (record.model, record.dataset, record.latent_dim, record.fold, record.config_hash, record.seed,
                    record.preset, record.split_hash, record.created_at, json.dumps(fields)))


def test_a_record_stored_before_fingerprints_is_kept_never_reused_and_marked(run_main, tmp_path, tiny_preset):
    from probseg_bench.protocol import RunPlan, run_protocol
    from probseg_bench.request import check_request

    root = write_folder(tmp_path / "data")
    request = request_for(root, tmp_path, tiny_preset)
    (record,) = run_protocol(check_request(request), ResultsStore(str(tmp_path / "new.db")))
    plan = RunPlan.prepare(check_request(request))
    old = replace(record, config_hash=plan.legacy_hash, data_fingerprint=None, settings_hash=None)
    legacy_store(tmp_path / "old.db", old)

    reader = ResultsStore(str(tmp_path / "old.db"), create=False)  # a reading command migrates nothing
    assert [r.data_fingerprint for r in reader.records()] == [None] and "data_fingerprint" not in reader.columns
    code, out, err = run_main("leaderboard", "--storage", str(tmp_path / "old.db"), "--format", "json")
    assert code == 0 and json.loads(out)[0]["data_fingerprint"] is None and json.loads(out)[0]["data_versions"] == 1

    args = run_args(root, tmp_path, tiny_preset)
    args[args.index("--storage") + 1] = str(tmp_path / "old.db")
    code, out, err = run_main(*args)  # the same command as the one that stored the old record
    assert code == 0, err
    assert "already in the results store" not in err
    (line,) = [x for x in err.splitlines() if "predates data fingerprints" in x]
    assert f"config {plan.legacy_hash[:8]}" in line and "not reused, training anew" in line
    with sqlite3.connect(tmp_path / "old.db") as db:
        rows = db.execute("SELECT config_hash, data_fingerprint, schema_version FROM fold_results ORDER BY id"
                          ).fetchall()
    assert rows == [(plan.legacy_hash, None, 1), (plan.config_hash, plan.exp.data_fingerprint, 2)]

    code, out, err = run_main("leaderboard", "--storage", str(tmp_path / "old.db"), "--format", "markdown")
    assert code == 0, err
    assert f"folder (size={SIZE}) [data unrecorded]" in out
    assert f"folder (size={SIZE}) [data {plan.exp.data_fingerprint[:8]}]" in out
    assert "[data unrecorded] (stored before data fingerprints): punet" in out


def test_an_old_store_is_migrated_once_and_keeps_its_rows(tmp_path):
    from probseg_bench.results import FoldRecord, add_missing_columns

    fields = dict(model="m", dataset="d", latent_dim=2, fold=0, seed=0, preset="p", config_hash="c" * 12,
                  split_hash="s" * 16, hyperparameters={}, protocol={}, metrics={}, per_image={}, test_ids=[],
                  timings={}, versions={})
    legacy_store(tmp_path / "old.db", FoldRecord(**fields))
    first = ResultsStore(str(tmp_path / "old.db"))
    assert "data_fingerprint" in first.columns
    assert "data_fingerprint" in add_missing_columns(first.engine)  # again: nothing to add, no error
    second = ResultsStore(str(tmp_path / "old.db"))
    second.add(FoldRecord(**{**fields, "config_hash": "e" * 12}, data_fingerprint="f" * 64))
    assert [r.data_fingerprint for r in second.records()] == [None, "f" * 64]


def test_validate_refuses_models_evaluated_on_different_data(monkeypatch, tmp_path):
    """validate compares the models on one set of test images: records of two data versions are refused (the data
    changed between the models' runs), never compared."""
    from probseg_bench import validation
    from probseg_bench.results import FoldRecord

    requests = validation.validation_requests(["punet", "spunet"], folds=(0,), run_dir=tmp_path / "runs")
    fingerprints = iter(["a" * 64, "b" * 64])

    def stored(checked, store, reporter=None):
        request = checked.request
        return [FoldRecord(model=request.model, dataset=request.dataset, latent_dim=request.latent_dims[0], fold=0,
                           seed=0, preset="quick", config_hash=f"{request.model:x<12}", split_hash="s" * 16,
                           hyperparameters={}, protocol={"n_eval_samples": 4}, metrics={"ewd": 0.5},
                           per_image={}, test_ids=["0", "1"], timings={}, versions={},
                           data_fingerprint=next(fingerprints))]

    monkeypatch.setattr(validation, "run_protocol", stored)
    with pytest.raises(ProbsegError, match="validate: the models were not evaluated on the same data"):
        validation.validate(requests, ResultsStore(str(tmp_path / "r.db")))
