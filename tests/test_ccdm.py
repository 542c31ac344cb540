"""What CCDM (Zbinden et al., ICCV 2023) defines, each against an independent computation: the cosine schedule,
the closed-form q(x_t | x_0) against composing one-step transitions, the posterior against Bayes' rule by hand,
the loss at a perfect prediction, ancestral sampling against a denoiser fixed by hand (the exact posterior of a
known per-pixel prior), the weight average; and the model through `run`, `tune` and `validate`."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
import torch

from probseg_bench.errors import ProbsegError
from probseg_models.ccdm import (
    CategoricalDiffusion,
    cosine_schedule,
    diffusion_kl,
    one_hot_sample,
    posterior,
    posterior_mixture,
    q_xt_given_x0,
    sampling_schedule,
)

SMALL = {"filters": "8,16", "res_blocks": 1, "head_channels": 8}


def small_ccdm(**kwargs) -> CategoricalDiffusion:
    torch.manual_seed(0)
    return CategoricalDiffusion(**{**SMALL, "ema_decay": 0.0, **kwargs})


def one_hot(labels: list[int]) -> torch.Tensor:
    """[len] class labels -> one-hot [1, 2, 1, len] (pixels along the width)."""
    return torch.nn.functional.one_hot(torch.tensor(labels), 2).T[None, :, None, :].double()


def transition(alpha: float) -> torch.Tensor:
    """The one-step matrix Q[i, j] = q(x_t = j | x_{t-1} = i) = alpha [i == j] + (1 - alpha) / 2."""
    return alpha * torch.eye(2, dtype=torch.float64) + (1 - alpha) / 2


# ----------------------------------------------------------------------------------------------- the process
def test_cosine_schedule_is_f_t_over_f_0_and_capped():
    alphas, abar = cosine_schedule(250)

    def f(t: float) -> float:
        return math.cos((t / 250 + 0.008) / 1.008 * math.pi / 2) ** 2

    assert abar.shape == (251,) and alphas[0] == abar[0] == 1
    for t in (1, 2, 100, 200, 249):  # below the cap, abar_t telescopes to f(t) / f(0)
        assert float(abar[t]) == pytest.approx(f(t) / f(0), rel=1e-12)
    betas = 1 - alphas[1:]
    assert float(betas.max()) == pytest.approx(0.999) and float(betas.min()) > 0  # the cap binds at t = T
    assert float(abar[1]) == pytest.approx(0.999806, abs=1e-6)  # the reference's closed form has f(0) = 0.999845
    assert float(abar[250]) == pytest.approx(f(249) / f(0) * 0.001, rel=1e-9)  # ~3.9e-8: the capped last beta
    with pytest.raises(ProbsegError, match="timesteps"):
        cosine_schedule(0)


@pytest.mark.parametrize("t", [1, 2, 37, 250])
def test_closed_form_equals_composed_one_step_transitions(t):
    alphas, abar = cosine_schedule(250)
    x0 = one_hot([1, 0])  # a foreground and a background pixel
    composed = torch.eye(2, dtype=torch.float64)
    for s in range(1, t + 1):
        composed = composed @ transition(float(alphas[s]))
    expected = torch.stack([composed[1], composed[0]], -1)[None, :, None, :]  # rows of the true classes
    closed = q_xt_given_x0(x0, abar[t : t + 1])
    torch.testing.assert_close(closed, expected, rtol=1e-12, atol=1e-14)


def test_posterior_by_bayes_rule_by_hand():
    """Two pixels, x_0 = (fg, bg), x_t = (bg, bg), alpha_t = 0.9 and abar_{t-1} = 0.5 (so abar_t = 0.45):
    q(x_{t-1} = v | x_t, x_0) is proportional to q(x_t | x_{t-1} = v) q(x_{t-1} = v | x_0)."""
    x0, xt = one_hot([1, 0]), one_hot([0, 0])
    post = posterior(xt, x0, torch.tensor([0.45]), torch.tensor([0.5]))
    # pixel 1: v = fg: (0.1 / 2) * (0.5 + 0.25) = 0.0375; v = bg: (0.9 + 0.05) * 0.25 = 0.2375
    # pixel 2: v = fg: 0.05 * 0.25 = 0.0125;              v = bg: 0.95 * 0.75 = 0.7125
    expected_fg = torch.tensor([0.0375 / 0.275, 0.0125 / 0.725], dtype=torch.float64)
    torch.testing.assert_close(post[0, 1, 0], expected_fg)
    torch.testing.assert_close(post.sum(1), torch.ones(1, 1, 2, dtype=torch.float64))
    # s = 0 (abar_0 = 1): the posterior is x_0 itself
    torch.testing.assert_close(posterior(xt, x0, torch.tensor([0.9]), torch.tensor([1.0])), x0)


def test_strided_posterior_equals_bayes_over_the_composed_chain():
    """q(x_s | x_t, x_0) for s = t - 5 from the jump abar_t / abar_s against Bayes' rule with the product of the
    five one-step matrices (what the strided sampler relies on)."""
    alphas, abar = cosine_schedule(250)
    s, t = 120, 125
    jump = torch.eye(2, dtype=torch.float64)
    for u in range(s + 1, t + 1):
        jump = jump @ transition(float(alphas[u]))
    for x0_label, xt_label in ((1, 0), (0, 0), (1, 1)):
        x0, xt = one_hot([x0_label]), one_hot([xt_label])
        prior_s = q_xt_given_x0(x0, abar[s : s + 1])[0, :, 0, 0]
        joint = jump[:, xt_label] * prior_s  # over v = x_s
        expected = joint / joint.sum()
        got = posterior(xt, x0, abar[t : t + 1], abar[s : s + 1])[0, :, 0, 0]
        torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-14)


def test_loss_is_zero_at_the_true_posterior_and_positive_elsewhere():
    _, abar = cosine_schedule(250)
    x0, xt = one_hot([1, 0, 1]), one_hot([0, 0, 1])
    t_, s_ = abar[40:41], abar[39:40]
    target = posterior(xt, x0, t_, s_)
    assert float(diffusion_kl(target, posterior_mixture(xt, x0, t_, s_))[0]) == pytest.approx(0, abs=1e-12)
    wrong = one_hot([0, 1, 0])
    assert float(diffusion_kl(target, posterior_mixture(xt, wrong, t_, s_))[0]) > 0.01
    # the mixture is linear in p(x_0 | x_t): half-half mixes the two posteriors
    half = 0.5 * x0 + 0.5 * wrong
    torch.testing.assert_close(posterior_mixture(xt, half, t_, s_),
                               0.5 * posterior(xt, x0, t_, s_) + 0.5 * posterior(xt, wrong, t_, s_))


def test_model_loss_is_zero_with_a_denoiser_that_returns_x0(monkeypatch):
    model = small_ccdm()
    y = torch.zeros(2, 1, 4, 4)
    y[:, :, 1:3, 1:3] = 1
    x0 = torch.cat([1 - y, y], 1)
    monkeypatch.setattr(model, "predict_x0", lambda xt, image, t: x0.float())
    loss, _ = model.loss(torch.rand(2, 1, 4, 4), x0, torch.tensor([1, 180]))
    torch.testing.assert_close(loss, torch.zeros(2), atol=1e-5, rtol=0)


def test_one_hot_sample_frequencies():
    torch.manual_seed(0)
    probs = torch.tensor([0.2, 0.8])[None, :, None, None].expand(1, 2, 200, 100)
    draws = one_hot_sample(probs)
    assert draws.shape == (1, 2, 200, 100) and bool((draws.sum(1) == 1).all())
    assert float(draws[:, 1].mean()) == pytest.approx(0.8, abs=0.01)


# -------------------------------------------------------------------------------------------------- sampling
def test_sampling_schedule():
    assert sampling_schedule(250, 250) == list(range(250, 0, -1)) == sampling_schedule(250, 400)
    assert sampling_schedule(250, 10) == [round(v) for v in np.linspace(250, 1, 10)]
    assert sampling_schedule(250, 10)[0] == 250 and sampling_schedule(250, 10)[-1] == 1
    assert sampling_schedule(5, 4) == [5, 4, 2, 1]


class BayesDenoiser(torch.nn.Module):
    """p(x_0 | x_t) of a known prior over x_0, independent per pixel: p(x_0 = k | x_t) proportional to
    prior_k q(x_t | x_0 = k). With it, ancestral sampling is exact: the samples' foreground frequency is the
    prior's (up to abar_T ~ 0 and the argmax at t = 1)."""

    def __init__(self, fg_prior: torch.Tensor, alpha_bars: torch.Tensor) -> None:
        super().__init__()
        self.fg_prior, self.alpha_bars = fg_prior, alpha_bars

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        xt = x[:, :2]
        a = self.alpha_bars[t].to(x.dtype)[:, None, None, None]
        prior = torch.stack([1 - self.fg_prior, self.fg_prior])[None].to(x.dtype)  # [1, 2, H, W]
        likelihood = a * xt + (1 - a) / 2  # q(x_t | x_0 = k) for each k, at the observed x_t
        joint = prior * likelihood
        return joint / joint.sum(1, keepdim=True)


@pytest.mark.parametrize("steps", [30, 6])
def test_samples_follow_a_denoiser_fixed_by_hand(steps):
    model = small_ccdm(timesteps=30, sampling_steps=steps).eval()
    fg_prior = torch.tensor([[0.3, 0.8], [0.0, 1.0]])  # a 2 x 2 image
    model.denoiser = BayesDenoiser(fg_prior, model.alpha_bars)
    torch.manual_seed(1)
    with torch.no_grad():
        logits = model.sample(torch.rand(1, 1, 2, 2), 3000)
    assert logits.shape == (1, 3000, 1, 2, 2)
    masks = logits > 0
    frequency = masks.double().mean(1)[0, 0]
    torch.testing.assert_close(frequency, fg_prior.double(), atol=0.04, rtol=0)
    assert bool(masks[0, :, 0, 1, 0].logical_not().all()) and bool(masks[0, :, 0, 1, 1].all())


def test_sample_chunks_and_shapes():
    model = small_ccdm(timesteps=10, sampling_steps=3, sample_batch=4).eval()
    x = torch.rand(3, 1, 8, 8)
    with torch.no_grad():
        torch.manual_seed(0)
        out = model.sample(x, 5)  # 15 images x samples in chunks of 4
    assert out.shape == (3, 5, 1, 8, 8) and torch.isfinite(out).all()
    assert bool(((out > 0) | (out <= 0)).all())


def test_odd_image_sizes_are_padded_and_cropped_back():
    model = small_ccdm(timesteps=10, sampling_steps=2).eval()
    with torch.no_grad():
        assert model.sample(torch.rand(1, 1, 7, 9), 2).shape == (1, 2, 1, 7, 9)


# -------------------------------------------------------------------------------------------- model and EMA
def test_forward_draws_one_step_in_training_and_stratified_steps_in_eval(monkeypatch):
    model = small_ccdm(timesteps=100, validation_timesteps=4)
    seen = []
    original = model.loss

    def spy(image, x0, t):
        seen.append(t.clone())
        return original(image, x0, t)

    monkeypatch.setattr(model, "loss", spy)
    x, masks = torch.rand(2, 1, 8, 8), (torch.rand(2, 3, 8, 8) > 0.5).to(torch.uint8)
    out = model.train()(x, masks)
    assert seen[-1].shape == (2,) and out.reconstruction.shape == (2,) and out.logits.shape == (2, 1, 8, 8)
    out = model.eval()(x, masks)
    assert seen[-1].tolist() == [12, 12, 38, 38, 62, 62, 88, 88]  # round((j + 1/2) T / 4), step-major
    assert out.reconstruction.shape == (2,) and out.prior is None and out.annotation_index.shape == (2,)
    torch.manual_seed(3)
    a = model(x, masks).reconstruction
    torch.manual_seed(3)
    torch.testing.assert_close(model(x, masks).reconstruction, a)


def test_weight_average_is_updated_after_each_step_and_used_in_eval_mode():
    model = small_ccdm(ema_decay=0.9)
    assert model.average is not None and not any(p.requires_grad for p in model.average.parameters())
    assert any(k.startswith("average.") for k in model.state_dict())
    start = [p.detach().clone() for p in model.average.parameters()]
    with torch.no_grad():
        for p in model.denoiser.parameters():
            p.add_(1.0)
    model.on_optimizer_step()
    for avg, first, cur in zip(model.average.parameters(), start, model.denoiser.parameters(), strict=True):
        torch.testing.assert_close(avg, 0.9 * first + 0.1 * cur)
    x, t = torch.rand(1, 1, 8, 8), torch.tensor([5])
    xt = torch.nn.functional.one_hot(torch.zeros(1, 8, 8, dtype=torch.long), 2).movedim(-1, 1).float()
    with torch.no_grad():
        torch.testing.assert_close(model.eval().predict_x0(xt, x, t), model.average(torch.cat([xt, x], 1), t))
        torch.testing.assert_close(model.train().predict_x0(xt, x, t), model.denoiser(torch.cat([xt, x], 1), t))
    no_average = small_ccdm(ema_decay=0.0)
    assert no_average.average is None and not any(k.startswith("average.") for k in no_average.state_dict())


def test_training_loop_calls_the_optimizer_step_hook(tiny_preset):
    from probseg_bench.experiment import Experiment
    from probseg_bench.request import RunRequest, check_request

    exp = Experiment.prepare(check_request(RunRequest(model="ccdm", dataset="synthetic", folds=(0,), preset=tiny_preset,
                                        dataset_params={"n_images": 20, "size": 32},
                                        hyperparameters={**SMALL, "ema_decay": 0.5, "timesteps": 10})))
    calls = []

    def hook(model):
        original = model.on_optimizer_step
        model.on_optimizer_step = lambda: (calls.append(1), original())

    model, result = exp.train(6, 0, model_hook=hook)
    assert len(calls) == result.steps > 0
    assert not torch.equal(next(model.average.parameters()), next(model.denoiser.parameters()))


@pytest.mark.parametrize(("name", "value", "message"), [
    ("ema_decay", 1.0, "ema_decay: expected a value in"), ("timesteps", 0, "timesteps: expected an integer >= 1"),
    ("attention_ds", "8,x", "attention_ds: expected comma-separated integers"),
    ("sampling_steps", 0, "sampling_steps: expected an integer >= 1"),
])
def test_bad_hyperparameters_are_named(name, value, message):
    with pytest.raises(ProbsegError, match=message):
        CategoricalDiffusion(**{**SMALL, name: value})


def test_reference_configuration_has_9m_parameters_and_attends_at_16_and_8():
    from probseg_bench.plugins import get_plugins

    spec = get_plugins().models.get("ccdm")
    hp = {h.name: h.default for h in spec.hyperparameters}
    assert (hp["timesteps"], hp["ema_decay"], hp["filters"], hp["res_blocks"]) == (250, 0.9999, "32,64,64,128,160", 2)
    assert {h.name for h in spec.hyperparameters if h.tunable} == {"timesteps"} and spec.objective == ()
    model = spec.factory(latent_dim=6, in_channels=1, **hp)
    assert model.latent_dim == 0
    assert sum(p.numel() for p in model.denoiser.parameters()) == pytest.approx(9.06e6, rel=0.01)
    from probseg_models.diffusion_unet import AttentionBlock

    x = torch.rand(1, 3, 128, 128)
    sizes = []
    hooks = [m.register_forward_hook(lambda mod, inp, out: sizes.append(out.shape[-1]))
             for m in model.denoiser.modules() if isinstance(m, AttentionBlock)]
    with torch.no_grad():
        model.denoiser(x, torch.tensor([10]))
    for h in hooks:
        h.remove()
    assert set(sizes) == {16, 8}  # attention_resolutions [32, 16, 8] checked as downsampling factors


# ------------------------------------------------------------------------------------ through the commands
TINY = ["--hp", "filters=8,16", "--hp", "res_blocks=1", "--hp", "head_channels=8", "--hp", "timesteps=20",
        "--hp", "sampling_steps=5"]


def test_ccdm_runs_to_a_leaderboard_row_with_er_as_a_dash(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from probseg_bench.cli import app
    from probseg_bench.leaderboard import build_leaderboard, leaderboard_table
    from probseg_bench.results import ResultsStore

    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["run", "--model", "ccdm", "--dataset", "lidc-sample", "--preset", "quick",
                                      "--epochs", "2", "--fold", "0", *TINY])
    assert result.exit_code == 0, result.output
    (record,) = ResultsStore().records()
    assert record.metrics["er"] is None and 0 <= record.metrics["hm_iou"] <= 1
    assert record.timings["samples_per_image"] == 16 and record.timings["sampling_s"] > 0
    # quick's model defaults for ccdm (one residual block, weight average 0.99, 4 validation steps), stored as such
    assert record.protocol["model_defaults"] == {"filters": "16,32,64,96", "res_blocks": "1", "ema_decay": "0.99",
                                                 "validation_timesteps": "4"}
    assert record.hyperparameters["model"]["ema_decay"] == 0.99
    table = leaderboard_table(build_leaderboard([record]))
    assert table.body[0][table.header.index("ER ↑")] == "–"


def test_ccdm_tunes_its_diffusion_steps(tiny_preset, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from probseg_bench.cli import app

    monkeypatch.chdir(tmp_path)
    args = ["tune", "--model", "ccdm", "--dataset", "synthetic", "--dataset-param", "n_images=20", "--dataset-param",
            "size=32", "--preset", tiny_preset, "--trials", "1", "--objective", "val_loss"]
    for fixed in ("filters=8,16", "res_blocks=1", "head_channels=8", "sampling_steps=3"):
        args += ["--fix", fixed]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    text = (tmp_path / "ccdm-synthetic-val_loss.toml").read_text()
    assert "timesteps = " in text


def test_ccdm_validates_against_the_oracle(tmp_path, tiny_preset):
    from probseg_bench.request import check_request
    from probseg_bench.results import ResultsStore
    from probseg_bench.validation import validate, validation_requests

    requests = validation_requests(["ccdm"], dataset_params={"n_images": 24, "size": 32}, preset=tiny_preset,
                                   run_dir=tmp_path / "runs")
    requests = [check_request(replace(c.request, hyperparameters={**SMALL, "timesteps": 10, "sampling_steps": 3}))
                for c in requests]
    report = validate(requests, ResultsStore(str(tmp_path / "r.db")))
    (ccdm,) = report.models
    assert np.isnan(ccdm.metrics["er"]) and np.isnan(ccdm.metrics["reconstruction_iou"])
    assert ccdm.metrics["ewd"] > 0 and ccdm.ewd_ratio == pytest.approx(ccdm.metrics["ewd"] / report.oracle["ewd"])
