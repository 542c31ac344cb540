"""probseg-bench analyze: the six figures and the HTML report for stored punet and spunet runs; the numbers
behind Fig. 6 (0 frozen dimensions = the stored test EWD of the same samples and seed)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from probseg_bench.analysis.analyze import analyze
from probseg_bench.analysis.loading import find_record, load_run
from probseg_bench.cli import app
from probseg_bench.errors import ProbsegError
from probseg_bench.results import ResultsStore

FIGURES = ["fig3_samples", "fig4_prior", "fig5_traversal", "fig6_freezing", "fig7_effective_rank", "fig8_entropy"]


@pytest.mark.parametrize("model", ["punet", "spunet"])
def test_analyze_writes_six_figures_and_a_report(monkeypatch, tmp_path, tiny_preset, model):
    monkeypatch.chdir(tmp_path)
    run = CliRunner().invoke(app, ["run", "--model", model, "--dataset", "lidc-sample", "--preset", tiny_preset,
                                   "-d", "3", "--fold", "1", "--hp", "filters=4,8", "--hp", "convs_per_block=1"])
    assert run.exit_code == 0, run.output
    out = CliRunner().invoke(app, ["analyze", "--model", model, "--dataset", "lidc-sample"])
    assert out.exit_code == 0, out.output
    report = tmp_path / out.stdout.strip()
    assert report.name == "report.html" and report.is_file()
    for stem in FIGURES:
        png, pdf = report.parent / f"{stem}.png", report.parent / f"{stem}.pdf"
        with Image.open(png) as im:
            im.verify()
        assert pdf.read_bytes().startswith(b"%PDF")
    html = report.read_text()
    assert html.count("data:image/png;base64,") == 6 and "probseg-bench analyze --model" in html and "ewd" in html

    record = find_record(ResultsStore(), model, "lidc-sample", 3, 1)
    result = analyze(load_run(record, None, "cpu"), tmp_path / "again", "test")
    assert result.freezing_ewd is not None and result.freezing_ewd.shape == (4,)
    assert result.freezing_ewd[0] == pytest.approx(record.metrics["ewd"], abs=1e-12)
    assert np.all((0 <= result.freezing_ewd) & (result.freezing_ewd <= 1))

    # a collapsed run (sample diversity 0.01 vs the annotators' 0.3) says so in the result and the report
    record.metrics.update(sample_diversity=0.01, annotator_diversity=0.3)
    collapsed = analyze(load_run(record, None, "cpu"), tmp_path / "collapsed", "test")
    assert len(collapsed.warnings) == 1 and "0.010" in collapsed.warnings[0] and "0.300" in collapsed.warnings[0]
    assert "class='warning'" in collapsed.report.read_text()


def test_analyze_without_a_stored_run_says_what_is_stored(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ProbsegError, match="no stored run of spunet on lidc-sample"):
        find_record(ResultsStore(), "spunet", "lidc-sample", 6, 0)
    with pytest.raises(ProbsegError) as info:  # no d and fold given: "any", never Python's None
        find_record(ResultsStore(), "spunet", "lidc-sample", None, None)
    assert "(any latent dim, any fold)" in str(info.value) and "None" not in str(info.value)
    assert "nothing of spunet on lidc-sample is stored" in str(info.value)


def test_a_checkpoint_of_another_run_is_refused(monkeypatch, tmp_path, tiny_preset):
    import shutil

    from probseg_bench.analysis.loading import load_run

    monkeypatch.chdir(tmp_path)
    for d in ("2", "3"):
        run = CliRunner().invoke(app, ["run", "--model", "punet", "--dataset", "lidc-sample", "--preset",
                                       tiny_preset, "-d", d, "--fold", "0", "--hp", "filters=4,8", "--hp",
                                       "convs_per_block=1"])
        assert run.exit_code == 0, run.output
    store = ResultsStore()
    d2, d3 = find_record(store, "punet", "lidc-sample", 2, 0), find_record(store, "punet", "lidc-sample", 3, 0)
    shutil.copy(d3.checkpoint, d2.checkpoint)  # the d=3 weights where the d=2 run's checkpoint should be
    with pytest.raises(ProbsegError, match=r"checkpoint of .*'latent_dim': 3.*but the record is .*'latent_dim': 2"):
        load_run(d2, None, "cpu")
    Path(d2.checkpoint).write_bytes(b"not a checkpoint")
    with pytest.raises(ProbsegError, match="best checkpoint of this stored run is damaged"):
        load_run(d2, None, "cpu")
