"""The results store and the leaderboard's aggregation, best marking and output formats."""

from __future__ import annotations

import csv
import io
import json

import numpy as np
import pytest

from probseg_bench.errors import ProbsegError
from probseg_bench.leaderboard import build_leaderboard, leaderboard_table, render
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
    obj = json.loads(render(rows, "json"))[0]
    for key in ("model", "dataset", "latent_dim", "folds"):
        assert key in obj
    for m in ("ged", "hm_iou", "ewd", "er"):
        assert f"{m}_mean" in obj and f"{m}_std" in obj
    assert obj["hm_iou_mean"] + obj["ewd_mean"] == pytest.approx(1.0)
    assert obj["folds"] == 2 and obj["n_test"] == 2
    row = next(csv.DictReader(io.StringIO(render(rows, "csv"))))
    assert float(row["ewd_mean"]) == pytest.approx(0.3)
    md = render(rows, "markdown")
    assert "EWD ↓" in md and "**0.300 ± 0.071**" in md


def test_single_fold_has_no_std():
    obj = json.loads(render(build_leaderboard([record()]), "json"))[0]
    assert obj["ewd_std"] is None


def per_image_record(model: str, fold: int, ewd: list[float], er: float = 2.0, d: int = 6,
                     split: str = "s", config: str | None = None) -> FoldRecord:
    rec = record(model, fold, ewd=float(np.mean(ewd)), er=er, d=d, config=config or model)
    rec.per_image = {"ewd": list(ewd), "hm_iou": [1 - e for e in ewd]}
    rec.test_ids = [f"case{i}" for i in range(len(ewd))]
    rec.split_hash = split
    return rec


def test_p_value_column_is_a_holm_corrected_wilcoxon_against_the_best():
    from scipy.stats import wilcoxon

    rng = np.random.default_rng(0)
    base = rng.random(12) * 0.5
    best = [per_image_record("spunet", f, list(base)) for f in range(3)]
    worse = [per_image_record("punet", f, list(base + 0.05 + 0.01 * rng.random(12))) for f in range(3)]
    noisy = [per_image_record("punet-nf", f, list(base + 0.02 * rng.standard_normal(12) + 0.001)) for f in range(3)]
    other_split = [per_image_record("other", f, list(base + 0.1), split="t") for f in range(3)]
    rows = {r.model: r for r in build_leaderboard(best + worse + noisy + other_split)}
    assert "ewd" in rows["spunet"].best and rows["spunet"].p_vs_best is None
    assert rows["other"].p_vs_best is None  # another split: not paired
    p_worse = wilcoxon(np.mean([r.per_image["ewd"] for r in worse], 0) - base).pvalue
    p_noisy = wilcoxon(np.mean([r.per_image["ewd"] for r in noisy], 0) - base).pvalue
    low, high = sorted([p_worse, p_noisy])
    expected = {p_worse: None, p_noisy: None}
    expected[low] = min(1, 2 * low)
    expected[high] = max(min(1, 2 * low), high)
    assert rows["punet"].p_vs_best == pytest.approx(expected[p_worse])
    assert rows["punet-nf"].p_vs_best == pytest.approx(expected[p_noisy])


def test_holm_hand_values():
    from probseg_bench.comparison import holm

    # sorted 0.01, 0.02, 0.04 with m = 3: 0.03, max(0.03, 0.04), max(0.04, 0.04)
    assert holm([0.04, 0.01, 0.02]) == pytest.approx([0.04, 0.03, 0.04])
    assert holm([0.5, 0.6]) == pytest.approx([1.0, 1.0])


def test_compare_pair_reports_median_difference_bootstrap_ci_and_fold_test():
    from probseg_bench.comparison import compare_pair

    a = [per_image_record("a", f, [0.2, 0.3, 0.4, 0.5, 0.6, 0.7]) for f in range(3)]
    b = [per_image_record("b", f, [0.1, 0.25, 0.3, 0.45, 0.5, 0.6]) for f in range(3)]
    c = compare_pair(a, b, "ewd", "a", "b", n_bootstrap=2000)
    assert (c.n_images, c.n_folds) == (6, 3)
    assert c.median_difference == pytest.approx(0.1)  # differences .1 .05 .1 .05 .1 .1
    assert 0.05 - 1e-9 <= c.ci_low <= c.median_difference <= c.ci_high <= 0.1 + 1e-9
    assert c.p_value == pytest.approx(0.03125)  # all 6 differences positive: exact two-sided p = 2 / 2**6
    assert c.fold_p_value == pytest.approx(0.25)  # 3 folds, all positive: the smallest possible p
    other = [per_image_record("x", f, [0.2] * 6, split="t") for f in range(3)]
    with pytest.raises(ProbsegError, match="same split"):
        compare_pair(a, other, "ewd", "a", "x")


def test_latex_and_pivot():
    models = (("punet", 0.45, 1.7), ("spunet", 0.44, 5.1))
    recs = [per_image_record(m, f, [e, e], er=er, d=d) for m, e0, er in models
            for d in (4, 6) for f, e in enumerate([e0, e0 + 0.01, e0 + 0.02])]
    rows = build_leaderboard(recs)
    latex = render(rows, "latex")
    assert latex.count("\\begin{tabular}") == 1 and latex.rstrip().endswith("\\end{tabular}")
    body = [line for line in latex.splitlines() if line.endswith("\\\\")]
    assert len(body) == 1 + 4 and all(line.count(" & ") == body[0].count(" & ") for line in body)
    assert "$\\pm$" in latex and "$\\downarrow$" in latex and "\\textbf{" in latex
    assert "_" not in latex.replace("\\_", "")
    pivot = render(rows, "markdown", pivot=True)
    assert "| dataset | model | preset | d=4 | d=6 |" in pivot
    assert "**0.450 ± 0.010 (5.10)**" in pivot and "0.460 ± 0.010 (1.70)" in pivot
    flat = json.loads(render(rows, "json", pivot=True))
    spunet = next(r for r in flat if r["model"] == "spunet")
    assert spunet["ewd_mean_d4"] == pytest.approx(0.45) and spunet["er_mean_d6"] == pytest.approx(5.1)
    assert "d=4" in render(rows, "latex", pivot=True)


def test_latex_compiles_as_a_table_body(tmp_path):
    import shutil
    import subprocess

    if shutil.which("pdflatex") is None:
        pytest.skip("pdflatex is not installed (apt install texlive-latex-recommended to run this check)")
    rows = build_leaderboard([per_image_record(m, f, [0.3 + f / 100, 0.4]) for m in ("punet", "spunet_x")
                              for f in range(3)])
    (tmp_path / "body.tex").write_text(render(rows, "latex"))
    (tmp_path / "doc.tex").write_text(
        "\\documentclass{article}\\usepackage{booktabs}\\usepackage[landscape]{geometry}\\begin{document}"
        "\\begin{table}\\scriptsize\\input{body.tex}\\end{table}\\end{document}"
    )
    proc = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "doc.tex"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-2000:]


def test_store_opens_while_another_process_creates_the_schema(monkeypatch, tmp_path):
    """Two `run` workers on a fresh SQLite file: the loser of the CREATE TABLE race must retry, not fail."""
    import sqlalchemy.exc

    from probseg_bench import results

    real = results._metadata.create_all
    calls = []

    def racing(engine):
        calls.append(engine)
        real(engine)
        if len(calls) == 1:
            raise sqlalchemy.exc.OperationalError("CREATE TABLE fold_results", {},
                                                  Exception("table fold_results already exists"))

    monkeypatch.setattr(results._metadata, "create_all", racing)
    store = results.ResultsStore(str(tmp_path / "r.db"))
    assert store.records() == [] and len(calls) == 2


def test_leaderboard_shows_sample_and_annotator_diversity_and_warns_on_a_collapse(tmp_path):
    from typer.testing import CliRunner

    from probseg_bench.cli import app

    healthy = [record("punet", f, config="p") for f in range(2)]
    collapsed = [record("spunet", f, config="s") for f in range(2)]
    for rec, (sd, ad) in zip(healthy + collapsed, [(0.30, 0.29), (0.28, 0.31), (0.010, 0.29), (0.006, 0.31)],
                             strict=True):
        rec.metrics.update(sample_diversity=sd, annotator_diversity=ad)
    old = record("punet-nf", config="n")  # a record written before the diversity metrics existed
    rows = {r.model: r for r in build_leaderboard(healthy + collapsed + [old])}
    assert rows["spunet"].mean["sample_diversity"] == pytest.approx(0.008)
    assert rows["spunet"].mean["annotator_diversity"] == pytest.approx(0.30)
    obj = {o["model"]: o for o in json.loads(render(list(rows.values()), "json"))}
    assert obj["punet"]["sample_diversity_mean"] == pytest.approx(0.29)
    assert obj["punet-nf"]["sample_diversity_mean"] is None
    md = render(list(rows.values()), "markdown")
    assert "sample div." in md and "annotator div." in md and "0.008 ± 0.003" in md
    assert "**0.008" not in md  # never ranked

    store = ResultsStore(str(tmp_path / "r.db"))
    for rec in healthy + collapsed + [old]:
        store.add(rec)
    result = CliRunner().invoke(app, ["leaderboard", "--storage", str(tmp_path / "r.db"), "--format", "json"])
    assert result.exit_code == 0, result.output
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "spunet" in warnings[0] and "0.008" in warnings[0]
    json.loads(result.stdout)  # stdout stays machine-readable


def test_models_run_on_different_folds_all_show_with_an_empty_p_and_a_footnote(tmp_path, run_main):
    """Issue 16: punet with --fold 0 and spunet with --fold 1 in one store printed no leaderboard at all ("A and B
    have no fold in common", exit 2)."""
    store = ResultsStore(str(tmp_path / "r.db"))
    store.add(per_image_record("punet", 0, [0.5, 0.6, 0.7]))
    store.add(per_image_record("spunet", 1, [0.2, 0.3, 0.4]))
    code, out, err = run_main("leaderboard", "--storage", str(tmp_path / "r.db"), "--format", "json")
    assert code == 0, err
    rows = {r["model"]: r for r in json.loads(out)}
    assert set(rows) == {"punet", "spunet"} and rows["punet"]["p_vs_best"] is None
    assert rows["punet"]["unpaired"] == "no fold in common with the best row" and rows["spunet"]["unpaired"] is None
    code, out, _ = run_main("leaderboard", "--storage", str(tmp_path / "r.db"), "--format", "markdown")
    assert "p empty (not paired with the best row): punet on lidc-sample, d=6: no fold in common" in out
    code, _, err = run_main("compare", "spunet", "punet", "--dataset", "lidc-sample", "--storage",
                            str(tmp_path / "r.db"))
    assert code == 2 and "spunet and punet have no fold in common" in err


def test_effective_rank_is_ranked_only_among_rows_of_one_latent_size():
    """ER is bounded by the latent size: a hierarchical model's ER over ~1,300 flattened dimensions (317) was bold
    against a d=6 model's (5.1); d=4 and d=7 rows were compared the same way."""
    rows_in = []
    for model, d, er, size in (("punet", 6, 4.0, None), ("spunet", 6, 5.1, None), ("punet", 4, 3.5, None),
                               ("hpunet", 1, 317.0, 1365)):
        rec = record(model, 0, ewd=0.5, er=er, d=d, config=f"{model}{d}")
        rec.latent_size = size
        rows_in.append(rec)
    rows = {(r.model, r.latent_dim): r for r in build_leaderboard(rows_in)}
    assert "er" in rows[("spunet", 6)].best and "er" not in rows[("punet", 6)].best
    # alone at its latent size: no rival, so no bold (a lone hierarchical model was bold on the README's board)
    assert "er" not in rows[("punet", 4)].best and "er" not in rows[("hpunet", 1)].best
    assert rows[("hpunet", 1)].latent_size == 1365 and rows[("punet", 4)].latent_size == 4
    assert "ER: among rows of one latent size" in leaderboard_table(list(rows.values())).caption
