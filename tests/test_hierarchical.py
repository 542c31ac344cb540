"""Tests of the hierarchical baselines: PHiSeg (Baumgartner et al. 2019; baumgach/PHiSeg-code), the HPU-Net with
GECO (Kohl et al. 2019; deepmind-research hierarchical_probabilistic_unet) and the hierarchical parts of the
contract (TrainOutput.level_sizes / level_weights, per-level KL and ER)."""

from __future__ import annotations

import math

import pytest
import torch
from torch.distributions import Normal

from probseg_bench.api import TrainOutput
from probseg_bench.errors import ProbsegError
from probseg_bench.metrics import effective_rank, effective_rank_per_level
from probseg_bench.plugins import get_plugins
from probseg_models.hpunet import GECO, HierarchicalProbabilisticUNet, top_k_mask
from probseg_models.phiseg import PHiSeg, residual_sums
from probseg_regularizers.kl import KLDivergence, kl_per_level


def small_phiseg(**kwargs) -> PHiSeg:
    torch.manual_seed(0)
    args = {"filters": "4,4,4,4,4", "latent_levels": 3, **kwargs}
    return PHiSeg(2, **args)


def batch(b: int = 2, a: int = 3, size: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    torch.manual_seed(1)
    return torch.rand(b, 1, size, size), (torch.rand(b, a, size, size) > 0.6).to(torch.uint8)


def test_phiseg_shapes_at_the_reference_size():
    """128^2, L = 5, R = 7, d = 2: z_l has 128 / 2^(l + 2) pixels a side; alpha = 4^l."""
    model = PHiSeg(2, filters="4,4,4,4,4,4,4", latent_levels=5)
    assert model.level_shapes(128, 128) == [(2, 32, 32), (2, 16, 16), (2, 8, 8), (2, 4, 4), (2, 2, 2)]
    assert model.level_weights == (1.0, 4.0, 16.0, 64.0, 256.0)
    assert PHiSeg(2, filters="4,4,4,4,4", exponential_weighting=False).level_weights == (1.0, 1.0, 1.0)


def test_phiseg_quick_levels():
    """The quick preset's 4 filters (R = 4): min(5, R - 2) = 2 latent levels, the finest a quarter of the image
    side as in the reference (lidc-sample's 32^2 crops: 8 and 4 pixels; synthetic's 128^2: 32 and 16)."""
    model = PHiSeg(2, filters="16,32,64,96")
    assert model.latent_levels == 2
    assert [s[1] for s in model.level_shapes(32, 32)] == [8, 4]
    assert [s[1] for s in model.level_shapes(128, 128)] == [32, 16]


def test_kl_per_level_closed_form_values():
    """BASELINES 1(e): mu_q 0, sigma_q 1, mu_p 1, sigma_p 1 -> 0.5 per element (a 2x2x2 level: 4.0); equal means,
    sigma_q 1, sigma_p 2 -> 0.31815 per element; q = p -> 0. Weighted sum with alpha."""
    b, sizes = 1, (8, 8)
    loc_q, scale_q = torch.zeros(b, 16), torch.ones(b, 16)
    loc_p = torch.cat([torch.ones(b, 8), torch.zeros(b, 8)], 1)
    scale_p = torch.cat([torch.ones(b, 8), 2 * torch.ones(b, 8)], 1)
    out = TrainOutput(logits=torch.zeros(b, 1, 2, 2), target=torch.zeros(b, 1, 2, 2), prior=Normal(loc_p, scale_p),
                      posterior=Normal(loc_q, scale_q), posterior_samples=torch.zeros(b, 1, 16),
                      prior_samples=torch.zeros(b, 1, 16), annotation_index=torch.zeros(b, dtype=torch.long),
                      level_sizes=sizes, level_weights=(1.0, 4.0))
    per_level = kl_per_level(out)
    torch.testing.assert_close(per_level, torch.tensor([[4.0, 8 * 0.31815]]), atol=1e-4, rtol=0)
    torch.testing.assert_close(KLDivergence()(out), torch.tensor([4.0 + 4 * 8 * 0.31815]), atol=1e-3, rtol=0)
    same = TrainOutput(**{**out.__dict__, "prior": out.posterior})
    assert float(kl_per_level(same).abs().max()) == 0.0


def monte_carlo_kl_per_level(out: TrainOutput, draws: int = 20000) -> torch.Tensor:
    """Per level, the mean over z ~ q of log q_l(z) - log p_l(z): [B, L], independent of the closed form."""
    z = out.posterior.sample((draws,))
    log_ratio = out.posterior.log_prob(z) - out.prior.log_prob(z)  # [S, B, D]
    return torch.stack([blk.sum(-1).mean(0) for blk in torch.split(log_ratio, list(out.level_sizes), -1)], 1)


def test_phiseg_kl_per_level_matches_a_monte_carlo_estimate():
    """KL_l (closed form, teacher-forced prior) vs the mean of log q_l(z) - log p_l(z) over z ~ q_l."""
    model = small_phiseg()
    x, y = batch()
    with torch.no_grad():
        out = model(x, y)
        exact = kl_per_level(out)
        mc = monte_carlo_kl_per_level(out)
    assert exact.shape == (2, 3) and (exact > 0).all()
    torch.testing.assert_close(mc, exact, rtol=0.03, atol=0.05)
    weights = torch.tensor(model.level_weights)
    torch.testing.assert_close(KLDivergence()(out), (exact * weights).sum(1))


def test_phiseg_residual_reconstruction_and_aggregation():
    """The level-0 residual logits are the prediction (sum of all levels); the aggregation leaves its inputs
    unchanged; the reconstruction is sum_l BCE(y, sum_{k>=l} s_k) summed over pixels."""
    s = [torch.randn(2, 1, 4, 4) for _ in range(3)]
    before = [t.clone() for t in s]
    acc = residual_sums(s)
    for a, b in zip(s, before, strict=True):
        assert torch.equal(a, b)
    torch.testing.assert_close(acc[0], s[0] + s[1] + s[2])
    torch.testing.assert_close(acc[2], s[2])
    model = small_phiseg()
    x, y = batch()
    torch.manual_seed(5)
    out = model(x, y)
    torch.manual_seed(5)
    k = torch.randint(3, (2,))
    target = y[torch.arange(2), k].unsqueeze(1).float()
    assert torch.equal(out.target, target)
    bce0 = torch.nn.functional.binary_cross_entropy_with_logits(out.logits, target, reduction="none").flatten(1).sum(1)
    assert (out.reconstruction > bce0).all()  # the coarser residual terms add to the level-0 term


def test_phiseg_prior_is_conditioned_on_the_coarser_posterior_sample_only_below_the_top():
    model = small_phiseg().eval()
    x, _ = batch()
    with torch.no_grad():
        torch.manual_seed(0)
        _, z = model.posterior_net(torch.cat([x, torch.zeros(2, 2, 16, 16)], 1))
        p0, _ = model.prior_net(x, given=z)
        z2 = [t.clone() for t in z]
        z2[2] = z2[2] + 1.0  # perturb the top level's sample
        p1, _ = model.prior_net(x, given=z2)
    assert torch.equal(p0[2].loc, p1[2].loc) and torch.equal(p0[2].scale, p1[2].scale)  # top prior: x only
    assert not torch.allclose(p0[1].loc, p1[1].loc)  # level 1 sees z_2
    assert torch.equal(p0[0].loc, p1[0].loc)  # level 0 sees z_1 only (Markov chain), unchanged


def test_phiseg_samples_and_decode_follow_the_flattened_layout():
    model = small_phiseg().eval()
    x, _ = batch()
    with torch.no_grad():
        prior = model.prior(x)
        d = sum(a * b * c for a, b, c in model.level_shapes(16, 16))
        assert prior.loc.shape == (2, d)
        z = prior.loc[:, None].expand(2, 3, d)
        logits = model.decode(x, z)
        assert logits.shape == (2, 3, 1, 16, 16)
        torch.testing.assert_close(logits[:, 0], logits[:, 2])  # same z, same logits (eval BN)
        samples = model.sample(x, 4)
    assert samples.shape == (2, 4, 1, 16, 16) and not torch.allclose(samples[:, 0], samples[:, 1])


def test_effective_rank_per_level():
    sigma = torch.tensor([[1.0, 1.0, 1.0, 1.0, 5.0, 0.0]])
    per_level = effective_rank_per_level(sigma, (4, 2))
    assert per_level[0] == pytest.approx([4.0]) and per_level[1] == pytest.approx([1.0])
    assert effective_rank(sigma[0]) < 6
    with pytest.raises(Exception, match="level_sizes"):
        effective_rank_per_level(sigma, (4, 3))
    assert math.isfinite(float(effective_rank_per_level(sigma[0], [6])[0]))


@pytest.mark.parametrize(("name", "tunable"), [("phiseg", {"beta", "latent_levels"}),
                                               ("hpunet", {"kappa", "geco_rate"})])
def test_hierarchical_models_declare_tunable_hyperparameters(name, tunable):
    spec = get_plugins().models.get(name)
    assert {h.name for h in spec.hyperparameters if h.tunable} == tunable
    assert [(t.regularizer, t.weight) for t in spec.objective] == [("kl", "beta")]


# ------------------------------------------------------------------------------------------------ HPU-Net
def small_hpunet(**kwargs) -> HierarchicalProbabilisticUNet:
    torch.manual_seed(0)
    args = {"filters": "4,6,8,8", "latent_levels": 4, "blocks_per_level": 1, **kwargs}
    return HierarchicalProbabilisticUNet(1, **args)


def test_hpunet_latent_scales():
    """Defaults on 128^2: 8 levels, bottleneck 1^2, z_0..z_3 of 1, 2, 4, 8 pixels; quick filters on 32^2: 3 scales
    (min(4, levels - 1)) of 4, 8, 16 pixels."""
    model = HierarchicalProbabilisticUNet(1, filters="4,4,4,4,4,4,4,4", blocks_per_level=1)
    assert [s[1] for s in model.level_shapes(128, 128)] == [1, 2, 4, 8]
    assert [s[1] for s in HierarchicalProbabilisticUNet(1, filters="16,32,64,96").level_shapes(32, 32)] == [4, 8, 16]
    x, y = batch(size=128)
    with torch.no_grad():
        out = model(x, y)
    assert out.level_sizes == (1, 4, 16, 64) and out.logits.shape == (2, 1, 128, 128)


def test_top_k_mask_counts_over_the_batch():
    """B = 2, 128^2: k = floor(32768 * 0.02) = 655 over the batch, N = 327.5 per image, kappa N = 16.375."""
    errors = torch.rand(2, 128 * 128)
    for deterministic in (True, False):
        mask = top_k_mask(errors, 0.02, deterministic)
        assert float(mask.sum()) == 655 and float(mask.sum(1).mean()) == 327.5
        assert 0.05 * float(mask.sum(1).mean()) == pytest.approx(16.375)
    deterministic = top_k_mask(errors, 0.02, True).bool()
    assert bool(errors[deterministic].min() >= errors[~deterministic].max())
    model = small_hpunet(top_k_percentage=1.0)
    logits, y = torch.randn(2, 1, 16, 16), (torch.rand(2, 1, 16, 16) > 0.5).float()
    r, n = model.reconstruction_terms(logits, y)
    torch.testing.assert_close(r, torch.nn.functional.binary_cross_entropy_with_logits(
        logits, y, reduction="none").flatten(1).sum(1))
    assert n.tolist() == [256.0, 256.0]


def test_geco_initial_multiplier_moving_average_and_straight_through_gradient():
    geco = GECO(kappa=0.05, decay=0.99, rate=0.01)
    assert float(geco.multiplier.detach()) == pytest.approx(1.0, abs=1e-6)
    r = torch.tensor([10.0, 20.0], requires_grad=True)
    n = torch.tensor([100.0, 100.0])
    term = geco(r, n)
    assert float(geco.moving_average) == 15.0  # MA_1 = R_1
    torch.testing.assert_close(term.mean(), geco.multiplier * (15.0 - 5.0))
    term.mean().backward()
    torch.testing.assert_close(r.grad, geco.multiplier.detach().expand(2) / 2)  # d mean / d r_b = lambda / B
    geco(torch.tensor([30.0, 30.0]), n)
    assert float(geco.moving_average) == pytest.approx(0.99 * 15.0 + 0.01 * 30.0)  # MA_2, no zero-debias
    geco.eval()
    before = float(geco.moving_average)
    geco(torch.tensor([1.0, 1.0]), n)
    assert float(geco.moving_average) == before  # evaluation does not move the average


@pytest.mark.parametrize(("r", "grows"), [(20.0, True), (1.0, False)])
def test_geco_multiplier_moves_with_the_constraint(r, grows):
    """Plain SGD on lambda * C: lambda grows while C = MA - kappa N > 0 (violated), shrinks when C < 0."""
    geco = GECO(kappa=0.05, decay=0.99, rate=0.01)
    optimiser = torch.optim.SGD(geco.parameters(), lr=1.0)
    n = torch.tensor([100.0, 100.0])  # kappa N = 5
    for _ in range(3):
        before = float(geco.multiplier.detach())
        optimiser.zero_grad()
        geco(torch.tensor([r, r]), n).mean().backward()
        optimiser.step()
        after = float(geco.multiplier.detach())
        assert (after > before) if grows else (after < before)


def test_hpunet_multiplier_is_trained_by_the_suite_objective():
    """Through the model and Adam (the suite's optimiser): a violated constraint raises lambda."""
    model = small_hpunet(kappa=1e-4)
    spec = get_plugins().models.get("hpunet")
    from probseg_bench.experiment import build_objective

    objective = build_objective(spec, get_plugins(), {"beta": 1.0})
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-2)
    x, y = batch()
    before = float(model.geco.multiplier.detach())
    for _ in range(2):
        loss, _ = objective(model(x, y))
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    assert float(model.geco.multiplier.detach()) > before
    assert {"geco.w", "geco.moving_average", "geco.steps"} <= set(model.state_dict())


def test_hpunet_per_scale_mean_sampling():
    """The reference's sample(img, mean=[...]): all means are deterministic, and varying only the coarsest scale
    (mean=[0, 1, 1]) draws fewer distinct masks than sampling every scale; the default samples every scale."""
    model = small_hpunet().eval()
    x, _ = batch()
    with torch.no_grad():
        torch.manual_seed(0)
        default = model.sample(x, 3)
        torch.manual_seed(0)
        torch.testing.assert_close(model.sample(x, 3, mean=[False] * 3), default)  # same draws as the default
        means = model.sample(x, 3, mean=True)
        torch.testing.assert_close(means[:, 0], means[:, 1])
        torch.testing.assert_close(model.sample(x, 3, mean=[True, True, True]), means)
        global_only = model.sample(x, 3, mean=[False, True, True])
    assert not torch.allclose(global_only[:, 0], global_only[:, 1])  # z_0 still varies
    finer = (default[:, 0] - default[:, 1]).abs().mean()
    assert (global_only[:, 0] - global_only[:, 1]).abs().mean() < finer
    with pytest.raises(ProbsegError, match="one flag per latent scale \\(3\\), got 2"):
        model.sample(x, 2, mean=[True, False])


def test_hpunet_validation_loss_does_not_depend_on_lambda():
    """The checkpoint is the epoch of lowest validation loss; with lambda * C in it, an hpunet fold picked epoch 9
    of 73 on synthetic (lambda still high, C < 0). In eval mode the reconstruction is the BCE over all pixels
    (the negative ELBO's), whatever lambda is; training keeps lambda * C."""
    from torch.nn import functional as F

    from probseg_bench.experiment import build_objective
    from probseg_bench.training import validation_loss

    model = small_hpunet()
    objective = build_objective(get_plugins().models.get("hpunet"), get_plugins(), {"beta": 1.0})
    x, y = batch()
    losses = []
    for multiplier in (1.0, 50.0):
        with torch.no_grad():
            model.geco.w.fill_(float(torch.log(torch.expm1(torch.tensor(multiplier**0.5)))))
        losses.append(validation_loss(model, objective, x, y, batch_size=2, seed=3)[0])
        model.eval()
        torch.manual_seed(3)
        with torch.no_grad():
            out = model(x, y)
        bce = F.binary_cross_entropy_with_logits(out.logits, out.target, reduction="none").flatten(1).sum(1)
        torch.testing.assert_close(out.reconstruction, bce)
    assert losses[0] == pytest.approx(losses[1], rel=1e-6)
    model.train()
    with torch.no_grad():
        trained = model(x, y).reconstruction
    assert not torch.allclose(trained, bce)  # training: lambda * (MA - kappa * N) over the top-k pixels


def test_hpunet_kl_per_level_matches_a_monte_carlo_estimate():
    model = small_hpunet()
    x, y = batch()
    with torch.no_grad():
        out = model(x, y)
        exact = kl_per_level(out)
        mc = monte_carlo_kl_per_level(out)
    assert exact.shape == (2, 3) and out.level_weights == ()  # min(4, levels - 1) = 3 scales
    torch.testing.assert_close(mc, exact, rtol=0.03, atol=0.05)
    torch.testing.assert_close(KLDivergence()(out), exact.sum(1))  # unweighted sum over the scales


def test_hpunet_decode_injects_latents_into_the_prior_net():
    model = small_hpunet().eval()
    x, _ = batch()
    with torch.no_grad():
        prior = model.prior(x)
        z = prior.loc[:, None].expand(2, 3, prior.loc.shape[1])
        logits = model.decode(x, z)
        torch.testing.assert_close(logits[:, 0], logits[:, 2])
        samples = model.sample(x, 4)
    assert logits.shape == (2, 3, 1, 16, 16) and samples.shape == (2, 4, 1, 16, 16)
    assert not torch.allclose(samples[:, 0], samples[:, 1])


@pytest.fixture(scope="module")
def hierarchical_runs(tmp_path_factory: pytest.TempPathFactory):
    """phiseg and hpunet through `run` (quick, 1 epoch, fold 0) on lidc-sample (d given) and synthetic (no -d:
    the model's reference d), one store."""
    from typer.testing import CliRunner

    from probseg_bench.cli import app

    folder = tmp_path_factory.mktemp("hier")
    db = f"sqlite:///{folder / 'r.db'}"
    for model, d in (("phiseg", "2"), ("hpunet", "1")):
        for dataset in ("lidc-sample", "synthetic"):
            dims = ["--latent-dim", d] if dataset == "lidc-sample" else []
            result = CliRunner().invoke(app, ["run", "--model", model, "--dataset", dataset, "--preset", "quick",
                                              "--epochs", "1", "--fold", "0", *dims, "--storage", db,
                                              "--run-dir", str(folder / "runs")])
            assert result.exit_code == 0, result.output
    return folder, db


def test_hierarchical_models_train_to_leaderboard_rows(hierarchical_runs):
    from probseg_bench.leaderboard import build_leaderboard
    from probseg_bench.results import ResultsStore

    _, db = hierarchical_runs
    records = ResultsStore(db).records()
    pairs = {(m, ds) for m in ("phiseg", "hpunet") for ds in ("lidc-sample", "synthetic")}
    assert {(r.model, r.dataset) for r in records} == pairs
    # without --latent-dim, each runs at its reference code's d: PHiSeg 2, HPU-Net 1 channel(s) per level
    assert {(r.model, r.latent_dim) for r in records} == {("phiseg", 2), ("hpunet", 1)}
    assert all(r.metrics["er"] is not None and r.metrics["er"] >= 1 for r in records)
    assert all({"reconstruction", "kl"} <= set(r.history[0]["train_terms"]) for r in records)
    assert {(r.model, r.dataset) for r in build_leaderboard(records)} == pairs


@pytest.mark.parametrize(("model", "fixed", "names"), [
    ("phiseg", ["filters=4,4,4"], ["beta", "latent_levels"]),
    ("hpunet", ["filters=4,4,4", "blocks_per_level=1"], ["geco_rate", "kappa"]),
])
def test_hierarchical_models_tune(model, fixed, names, tiny_preset, tmp_path, monkeypatch):
    """A search space from the declared hyperparameters, and one trial of `tune` to a parameters file."""
    from typer.testing import CliRunner

    from probseg_bench.cli import app
    from probseg_bench.experiment import Experiment
    from probseg_bench.request import RunRequest, check_request
    from probseg_bench.tuning import search_space

    synth = {"n_images": 40, "size": 32}
    exp = Experiment.prepare(check_request(RunRequest(model=model, dataset="synthetic", latent_dims=(1,), folds=(0,),
                                        preset=tiny_preset, dataset_params=synth)))
    assert [p.name for p in search_space(exp)] == names
    monkeypatch.chdir(tmp_path)
    args = ["tune", "--model", model, "--dataset", "synthetic", "--dataset-param", "n_images=40", "--dataset-param",
            "size=32", "--preset", tiny_preset, "--trials", "1", "--objective", "val_loss"]
    for f in fixed:
        args += ["--fix", f]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    text = (tmp_path / f"{model}-synthetic-val_loss.toml").read_text()
    assert all(f"{n} = " in text for n in names)
    assert f"latent_dim = {2 if model == 'phiseg' else 1}" in text  # no -d: the reference code's d


def test_analyze_skips_the_per_axis_figures_of_a_hierarchical_model(hierarchical_runs):
    from typer.testing import CliRunner

    from probseg_bench.cli import app

    folder, db = hierarchical_runs
    result = CliRunner().invoke(app, ["analyze", "--model", "hpunet", "--dataset", "lidc-sample", "--fold", "0",
                                      "--storage", db, "--output", str(folder / "an")])
    assert result.exit_code == 0, result.output
    lines = [line for line in result.output.splitlines() if "skipped figures 4-6" in line]
    assert len(lines) == 1 and "hierarchical" in lines[0]
    out = next((folder / "an").iterdir())
    assert (out / "fig7_effective_rank.png").is_file() and (out / "fig8_entropy.png").is_file()
    assert not list(out.glob("fig[4-6]_*"))
