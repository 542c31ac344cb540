"""What the papers define for the baselines without latent prior: SSN (Monteiro et al. 2020) and the U-Net
ensemble."""

from __future__ import annotations

import math

import pytest
import torch

from probseg_bench.errors import ProbsegError
from probseg_models.ensemble import UNetEnsemble
from probseg_models.ssn import CLASSES, StochasticSegmentationNetwork, mc_nll


def small_ssn(**kwargs) -> StochasticSegmentationNetwork:
    torch.manual_seed(0)
    return StochasticSegmentationNetwork(latent_dim=6, filters="4,8", convs_per_block=1, **kwargs)


def test_ssn_layout_matches_a_dense_covariance():
    """F[(c, p), r] = factor channel r*C + c at pixel p; Sigma = F F^T + D with the (C, H, W) event order."""
    model = small_ssn(rank=3)
    x = torch.rand(1, 1, 2, 2)
    with torch.no_grad():
        mu, factor, diag = model.distribution(x)
        raw = model.factor_head(torch.relu(model.unet(x)))[0]  # [R*C, H, W]
    dense = torch.zeros(CLASSES * 4, 3)
    for r in range(3):
        for c in range(CLASSES):
            dense[c * 4 : (c + 1) * 4, r] = raw[r * CLASSES + c].reshape(-1)
    torch.testing.assert_close(factor[0], dense)
    assert mu.shape == diag.shape == (1, CLASSES * 4) and (diag > 0).all()


def test_ssn_samples_have_the_parametrised_covariance():
    """Empirical covariance of many draws vs Sigma = P P^T + D on a 2x2 image (8 logits)."""
    model = small_ssn(rank=2)
    x = torch.rand(1, 1, 2, 2)
    with torch.no_grad():
        mu, factor, diag = model.distribution(x)
        mu, factor, diag = mu.double(), factor.double(), diag.double()
        torch.manual_seed(1)
        eta = model.draw(mu, factor, diag, 200_000)[0]  # [n, 8]
    sigma = factor[0] @ factor[0].T + torch.diag(diag[0])
    empirical = torch.cov(eta.T)
    scale = float(sigma.diagonal().max())
    assert float((empirical - sigma).abs().max()) < 0.02 * scale
    torch.testing.assert_close(eta.mean(0), mu[0], atol=0.01 * math.sqrt(scale), rtol=0)
    # sample() returns eta_1 - eta_0 per pixel: its variance follows from Sigma
    with torch.no_grad():
        torch.manual_seed(2)
        fg = model.sample(x, 50_000)[0, :, 0].reshape(50_000, 4).double()
    diff = torch.zeros(4, 8, dtype=torch.float64)
    diff[torch.arange(4), torch.arange(4) + 4] = 1
    diff[torch.arange(4), torch.arange(4)] = -1
    torch.testing.assert_close(fg.var(0), (diff @ sigma @ diff.T).diagonal(), rtol=0.05, atol=0)


def test_ssn_mc_loss_by_hand():
    """Two samples of a 1-pixel image, y = 1: log-likelihoods log softmax(eta_s)[1], loss -log mean_s exp(.)."""
    eta = torch.tensor([[[0.0, 2.0], [1.0, -1.0]]])  # [B=1, S=2, C*P = 2] (class 0, class 1)
    y = torch.ones(1, 1, 1, dtype=torch.long)
    l1 = 2.0 - math.log(math.exp(0.0) + math.exp(2.0))
    l2 = -1.0 - math.log(math.exp(1.0) + math.exp(-1.0))
    expected = -math.log((math.exp(l1) + math.exp(l2)) / 2)
    assert float(mc_nll(eta, y)[0]) == pytest.approx(expected, abs=1e-6)
    # hand-computed: log-likelihoods -1 and -3 give log-mean-exp -1.5662; S copies of one draw give its NLL
    ll = torch.tensor([[-1.0, -3.0]])
    assert float(torch.logsumexp(ll, 1) - math.log(2)) == pytest.approx(-1.5662, abs=1e-4)
    same = eta[:, :1].expand(1, 5, 2)
    assert float(mc_nll(same, y)[0]) == pytest.approx(-l1, abs=1e-6)


def test_ssn_loss_with_zero_covariance_is_the_summed_cross_entropy():
    """F = 0, D -> 0, mu = 0, 2 classes, P = 4 pixels: the loss is P ln 2 = 2.7726."""
    model = small_ssn(rank=2, mc_samples=4)
    mu = torch.zeros(1, CLASSES * 4)
    loss = model.mc_loss(mu, torch.zeros(1, 8, 2), torch.full((1, 8), 1e-12), torch.randint(2, (1, 2, 2)))
    assert float(loss[0]) == pytest.approx(4 * math.log(2), abs=1e-4)


def test_ssn_antithetic_pairs_average_to_the_mean_and_need_even_samples():
    with pytest.raises(ProbsegError, match="mc_samples"):
        small_ssn(mc_samples=3, antithetic=True)
    model = small_ssn(rank=2, mc_samples=4, antithetic=True)
    mu, factor, diag = torch.randn(1, 8), torch.randn(1, 8, 2), torch.rand(1, 8)
    y = torch.randint(2, (1, 2, 2))
    torch.manual_seed(0)
    half = model.draw(mu, factor, diag, 2) - mu[:, None]
    torch.manual_seed(0)
    loss = model.mc_loss(mu, factor, diag, y)
    eta = torch.cat([mu[:, None] + half, mu[:, None] - half], 1)
    torch.testing.assert_close(eta.mean(1), mu)
    torch.testing.assert_close(loss, mc_nll(eta, y))


def test_ssn_training_output_and_gradient():
    model = small_ssn(rank=2, mc_samples=4)
    x, masks = torch.rand(2, 1, 8, 8), (torch.rand(2, 3, 8, 8) > 0.5).to(torch.uint8)
    out = model(x, masks)
    assert model.latent_dim == 0 and out.prior is None and out.reconstruction is not None
    assert out.reconstruction.shape == (2,)
    out.reconstruction.mean().backward()
    assert all(p.grad is not None for p in model.parameters())


@pytest.mark.parametrize(("name", "tunable"), [("ssn", {"rank", "mc_samples"}), ("unet-ensemble", {"members"})])
def test_baselines_declare_what_tune_searches(name, tunable):
    from probseg_bench.plugins import get_plugins

    spec = get_plugins().models.get(name)
    assert {h.name for h in spec.hyperparameters if h.tunable} == tunable
    assert spec.objective == ()  # no latent regularizer


def small_ensemble(members: int = 3) -> UNetEnsemble:
    torch.manual_seed(0)
    return UNetEnsemble(latent_dim=6, members=members, filters="4,8", convs_per_block=1)


def test_ensemble_members_differ_and_samples_cycle_through_them():
    model = small_ensemble(3).eval()
    x = torch.rand(2, 1, 8, 8)
    with torch.no_grad():
        members = model.member_logits(x)
        samples = model.sample(x, 8)
    assert members.shape == (2, 3, 1, 8, 8) and samples.shape == (2, 8, 1, 8, 8)
    for i in range(3):
        for j in range(i):
            assert not torch.equal(members[:, i], members[:, j])
    params = [torch.cat([p.flatten() for p in u.parameters()]) for u in model.unets]
    assert not torch.equal(params[0], params[1])
    for i in range(8):
        torch.testing.assert_close(samples[:, i], members[:, i % 3], rtol=0, atol=0)


def test_ensemble_members_draw_their_own_annotations_and_losses_add():
    model = small_ensemble(4)
    x = torch.rand(2, 1, 8, 8)
    masks = torch.stack([torch.full((8, 8), a % 2, dtype=torch.uint8) for a in range(6)])[None].repeat(2, 1, 1, 1)
    torch.manual_seed(3)
    out = model(x, masks)
    torch.manual_seed(3)
    k = torch.randint(6, (2, 4))
    logits = model.member_logits(x)[:, :, 0]
    y = (k % 2).float()[:, :, None, None].expand(-1, -1, 8, 8)
    expected = torch.nn.functional.binary_cross_entropy_with_logits(logits, y, reduction="none").sum((1, 2, 3))
    torch.testing.assert_close(out.reconstruction, expected)
    torch.testing.assert_close(out.annotation_index, k[:, 0])
    assert out.prior is None and model.prior(x) is None


@pytest.fixture(scope="module")
def baseline_runs(tmp_path_factory: pytest.TempPathFactory):
    """ssn and unet-ensemble through `run` (quick, 1 epoch, fold 0) on lidc-sample and synthetic, one store."""
    from typer.testing import CliRunner

    from probseg_bench.cli import app

    folder = tmp_path_factory.mktemp("baselines")
    db = f"sqlite:///{folder / 'r.db'}"
    for model in ("ssn", "unet-ensemble"):
        for dataset in ("lidc-sample", "synthetic"):
            result = CliRunner().invoke(app, ["run", "--model", model, "--dataset", dataset, "--preset", "quick",
                                              "--epochs", "1", "--fold", "0", "--storage", db,
                                              "--run-dir", str(folder / "runs")])
            assert result.exit_code == 0, result.output
    return folder, db


def test_baselines_train_to_a_leaderboard_row_with_er_as_a_dash(baseline_runs):
    from typer.testing import CliRunner

    from probseg_bench.cli import app
    from probseg_bench.leaderboard import NOT_APPLICABLE, build_leaderboard, leaderboard_table
    from probseg_bench.results import ResultsStore

    _, db = baseline_runs
    records = ResultsStore(db).records()
    assert len(records) == 4 and all(r.metrics["er"] is None for r in records)
    assert all(h["val_effective_rank"] is None for r in records for h in r.history)
    rows = build_leaderboard(records)
    assert {(r.model, r.dataset) for r in rows} == {(m, d) for m in ("ssn", "unet-ensemble")
                                                      for d in ("lidc-sample", "synthetic")}
    table = leaderboard_table(rows)
    er = next(i for i, h in enumerate(table.header) if h.startswith("ER"))
    for cells, bold in zip(table.body, table.bold, strict=True):
        assert cells[er] == NOT_APPLICABLE and not bold[er]
    assert all("er" not in r.best for r in rows)
    result = CliRunner().invoke(app, ["leaderboard", "--format", "markdown", "--storage", db])
    assert result.exit_code == 0 and "| – |" in result.output


def test_analyze_skips_the_latent_figures_in_one_line(baseline_runs):
    from typer.testing import CliRunner

    from probseg_bench.cli import app

    folder, db = baseline_runs
    result = CliRunner().invoke(app, ["analyze", "--model", "ssn", "--dataset", "synthetic", "--fold", "0",
                                      "--storage", db, "--output", str(folder / "an")])
    assert result.exit_code == 0, result.output
    lines = [line for line in result.output.splitlines() if "skipped figures 4-7" in line]
    assert len(lines) == 1 and "no latent prior" in lines[0]
    out = next((folder / "an").iterdir())
    assert (out / "fig3_samples.png").is_file() and (out / "fig8_entropy.png").is_file()
    assert not list(out.glob("fig[4-7]_*"))


def test_plugin_check_holds_a_model_without_latent_prior_to_none():
    from torch.distributions import Normal

    from probseg_bench.plugin_check import check_model

    class Leaky(UNetEnsemble):
        def prior(self, image):
            return Normal(torch.zeros(image.shape[0], 2), torch.ones(image.shape[0], 2))

    x, y = torch.rand(2, 1, 8, 8), (torch.rand(2, 3, 8, 8) > 0.5).to(torch.uint8)
    check_model("unet-ensemble", small_ensemble(2), 6, x, y)  # latent_dim 0 for any d the factory was given
    torch.manual_seed(0)
    leaky = Leaky(latent_dim=6, members=2, filters="4,8", convs_per_block=1)
    with pytest.raises(ProbsegError, match=r"prior\(x\) returned a Normal, expected None .* latent_dim = 0"):
        check_model("leaky", leaky, 6, x, y)
