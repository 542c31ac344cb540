"""The results store and the leaderboard's aggregation, best marking and output formats."""

from __future__ import annotations

import csv
import io
import json

import numpy as np
import pytest

from probseg_bench.errors import ProbsegError
from probseg_bench.leaderboard import build_leaderboard, render_csv, render_json, render_markdown
from probseg_bench.results import FoldRecord, ResultsStore


def record(model: str = "punet", fold: int = 0, ewd: float = 0.5, er: float = 2.0, d: int = 6,
           dataset: str = "lidc-sample", config: str = "abc") -> FoldRecord:
    return FoldRecord(
        model=model, dataset=dataset, latent_dim=d, fold=fold, seed=0, preset="paper", config_hash=config,
        split_hash="s", hyperparameters={"model": {"beta": 1.0}}, protocol={"epochs": 1},
        metrics={"ged": 2 * ewd, "hm_iou": 1 - ewd, "ewd": ewd, "er": er},
        per_image={"ewd": [ewd, ewd]}, test_ids=["a", "b"], timings={"train_s": 1.0}, versions={"torch": "x"},
    )


def test_store_round_trip_and_duplicates_refused(tmp_path):
    store = ResultsStore(str(tmp_path / "r.db"))  # a plain path is a SQLite file
    rec = record()
    store.add(rec)
    assert store.get(rec.key) == rec
    with pytest.raises(ProbsegError, match="already stored"):
        store.add(record())
    assert len(ResultsStore(f"sqlite:///{tmp_path / 'r.db'}").records()) == 1
    assert store.records(models=["spunet"]) == []


def test_a_file_that_is_not_a_database_is_refused(tmp_path):
    bad = tmp_path / "notes.db"
    bad.write_text("this is not sqlite " * 100)
    with pytest.raises(ProbsegError, match=r"notes\.db"):
        ResultsStore(str(bad))


def test_leaderboard_mean_std_and_best():
    recs = [record("punet", f, ewd=e, er=r) for f, (e, r) in enumerate([(0.5, 1.5), (0.6, 1.7), (0.7, 1.6)])]
    recs += [record("spunet", f, ewd=e, er=r, config="def") for f, (e, r) in enumerate([(0.4, 5.0), (0.5, 5.2)])]
    rows = build_leaderboard(recs)
    punet, spunet = (r for r in rows if r.model == "punet"), (r for r in rows if r.model == "spunet")
    punet, spunet = next(punet), next(spunet)
    assert punet.folds == 3 and spunet.folds == 2
    assert punet.mean["ewd"] == pytest.approx(0.6)
    assert punet.std["ewd"] == pytest.approx(np.std([0.5, 0.6, 0.7], ddof=1))
    assert spunet.mean["hm_iou"] == pytest.approx(0.55)
    assert spunet.best == {"ged", "hm_iou", "ewd", "er"} and punet.best == set()


def test_json_csv_markdown():
    rows = build_leaderboard([record(fold=0, ewd=0.25), record(fold=1, ewd=0.35)])
    obj = json.loads(render_json(rows))[0]
    for key in ("model", "dataset", "latent_dim", "folds"):
        assert key in obj
    for m in ("ged", "hm_iou", "ewd", "er"):
        assert f"{m}_mean" in obj and f"{m}_std" in obj
    assert obj["hm_iou_mean"] + obj["ewd_mean"] == pytest.approx(1.0)
    assert obj["folds"] == 2 and obj["n_test"] == 2
    row = next(csv.DictReader(io.StringIO(render_csv(rows))))
    assert float(row["ewd_mean"]) == pytest.approx(0.3)
    md = render_markdown(rows)
    assert "EWD ↓" in md and "**0.300 ± 0.071**" in md


def test_single_fold_has_no_std():
    obj = json.loads(render_json(build_leaderboard([record()])))[0]
    assert obj["ewd_std"] is None
