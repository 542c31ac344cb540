"""The pre-training check of a model plugin (probseg_bench.plugin_check): each broken output is named with the
plugin, the method and the expected vs. actual shape / type; a correct model trains exactly as without it."""

from __future__ import annotations

import re
from dataclasses import replace
from typing import Any

import pytest
import torch
from torch import nn
from torch.distributions import Independent, Normal

from probseg_bench.api import TrainOutput
from probseg_bench.errors import ProbsegError
from probseg_bench.experiment import Experiment
from probseg_bench.plugin_check import check_model
from probseg_bench.plugins import reset_plugins
from probseg_bench.request import RunRequest, check_request

from fakeplugin import TINY_SPEC, TinyLatentModel, install_fake_distribution, make_model_plugin_module

X = torch.rand(2, 1, 32, 32)
MASKS = (torch.rand(2, 3, 32, 32) > 0.5).to(torch.uint8)


@pytest.fixture(autouse=True)
def fresh_plugins():
    reset_plugins()
    yield
    reset_plugins()


def run_check(model: Any, latent_dim: int = 3) -> None:
    check_model("my-model", model, latent_dim, X, MASKS)


def broken_forward(**changes: Any) -> type[TinyLatentModel]:
    """A TinyLatentModel whose TrainOutput has ``changes`` (callables of the correct output) applied."""

    class Broken(TinyLatentModel):
        def forward(self, image: torch.Tensor, masks: torch.Tensor) -> TrainOutput:
            out = super().forward(image, masks)
            return replace(out, **{k: f(out) for k, f in changes.items()})

    return Broken


def test_a_correct_model_passes_and_keeps_its_mode_rng_and_gradients():
    torch.manual_seed(0)
    model = TinyLatentModel(3)
    model.train()
    model.head.eval()  # a submodule deliberately in eval mode stays so
    before = torch.get_rng_state()
    run_check(model)
    assert torch.equal(torch.get_rng_state(), before)
    assert model.training and model.features.training and not model.head.training
    assert all(p.grad is None for p in model.parameters())


@pytest.mark.parametrize(("model", "message"), [
    ({"not": "a model"}, "model plugin 'my-model': factory returned dict, expected a torch.nn.Module"),
    (nn.Linear(2, 2), "has no method sample, prior, decode"),
])
def test_not_a_latent_model(model, message):
    with pytest.raises(ProbsegError, match=re.escape(message)):
        run_check(model)


def test_latent_dim_attribute_missing_or_wrong():
    model = TinyLatentModel(3)
    with pytest.raises(ProbsegError, match=r"has latent_dim = 3, expected the integer latent_dim = 4"):
        run_check(model, latent_dim=4)
    del model.latent_dim
    with pytest.raises(ProbsegError, match=r"has no attribute latent_dim, expected the integer latent_dim = 3"):
        run_check(model)


def test_sample_shape_names_the_method_and_both_shapes():
    class NoChannelAxis(TinyLatentModel):
        def sample(self, image: torch.Tensor, n: int) -> torch.Tensor:
            return super().sample(image, n)[:, :, 0]

    with pytest.raises(ProbsegError) as info:
        run_check(NoChannelAxis(3))
    assert str(info.value).startswith(
        "model plugin 'my-model': sample(x, n=2) returned shape [2, 2, 32, 32], expected [B=2, n=2, K=1, H=32, W=32]"
        " (pre-training check, x: float32 [2, 1, 32, 32], masks: uint8 [2, 3, 32, 32])"
    )


@pytest.mark.parametrize(("changes", "message"), [
    ({"logits": lambda o: o.logits[:, 0]},
     "forward(x, masks) returned logits of shape [2, 32, 32], expected [B=2, K, H=32, W=32]"),
    ({"logits": lambda o: o.logits.tolist()}, "forward(x, masks) returned logits as a list, expected a tensor"),
    ({"logits": lambda o: o.logits.long()}, "forward(x, masks) returned logits of dtype torch.int64, expected a "
                                            "floating-point tensor"),
    ({"logits": lambda o: o.logits * float("nan")}, "forward(x, masks) returned logits with NaN or infinite values"),
    ({"target": lambda o: o.target[:, :, :16]},
     "forward(x, masks) returned target of shape [2, 1, 16, 32], expected [B=2, K=1, H=32, W=32]"),
    ({"target": lambda o: o.target * 255}, "forward(x, masks) returned a target with values other than 0 and 1"),
    ({"prior": lambda o: Independent(o.prior, 1)},
     "forward(x, masks) returned prior as an Independent, expected a torch.distributions.Normal with loc/scale "
     "[B=2, d=3]"),
    ({"posterior": lambda o: Normal(o.posterior.loc[:, :2], o.posterior.scale[:, :2])},
     "forward(x, masks) returned posterior.loc of shape [2, 2], expected [B=2, d=3]"),
    ({"posterior_samples": lambda o: o.posterior_samples[:, 0]},
     "forward(x, masks) returned posterior_samples of shape [2, 3], expected [B=2, S, d=3]"),
    ({"prior_samples": lambda o: o.prior_samples.repeat(1, 2, 1)},
     "forward(x, masks) returned prior_samples of shape [2, 2, 3], expected [B=2, S=1, d=3]"),
    ({"annotation_index": lambda o: o.annotation_index.float()},
     "forward(x, masks) returned annotation_index of dtype torch.float32, expected an integer tensor [B=2]"),
    ({"annotation_index": lambda o: torch.full_like(o.annotation_index, 3)},
     "forward(x, masks) returned annotation_index [3, 3], expected values in 0..2 (A=3 annotators)"),
    ({"log_det": lambda o: torch.zeros(2)}, "forward(x, masks) returned log_det without base_samples"),
    ({"base_samples": lambda o: o.posterior_samples},
     "forward(x, masks) returned base_samples of shape [2, 1, 3], expected [B=2, d=3]"),
    ({"sample_blocks": lambda o: 2},
     "forward(x, masks) returned sample_blocks = 2, expected an integer >= 1 dividing S = 1"),
])
def test_broken_train_output_fields(changes, message):
    torch.manual_seed(0)
    with pytest.raises(ProbsegError, match=r"^model plugin 'my-model': " + re.escape(message)):
        run_check(broken_forward(**changes)(3))


def test_forward_must_return_a_train_output():
    class Tuple(TinyLatentModel):
        def forward(self, image: torch.Tensor, masks: torch.Tensor) -> Any:
            out = super().forward(image, masks)
            return out.logits, out.target

    with pytest.raises(ProbsegError, match=r"forward\(x, masks\) returned a tuple, expected a "
                                           r"probseg_bench.api.TrainOutput"):
        run_check(Tuple(3))


def test_an_exception_in_the_plugin_is_named_with_the_method_and_its_line():
    class Crashes(TinyLatentModel):
        def sample(self, image: torch.Tensor, n: int) -> torch.Tensor:
            return torch.cat([image, self.prior(image).sample((n,))])  # wrong: different ranks

    with pytest.raises(ProbsegError, match=r"sample\(x, n=2\) raised RuntimeError: .*"
                                           r"\(at .*test_plugin_check\.py:\d+\)"):
        run_check(Crashes(3))


@pytest.mark.parametrize(("method", "result", "message"), [
    ("prior", lambda self, x: Normal(torch.zeros(2, 3), -torch.ones(2, 3), validate_args=False),
     "prior(x) returned scale <= 0 (min -1), expected positive standard deviations"),
    ("prior", lambda self, x: torch.zeros(2, 3), "prior(x) returned a Tensor, expected a torch.distributions.Normal"),
    ("decode", lambda self, x, z: torch.zeros(2, 2, 1, 16, 16),
     "decode(x, z [2, 2, 3]) returned shape [2, 2, 1, 16, 16], expected [B=2, n=2, K=1, H=32, W=32]"),
    ("sample", lambda self, x, n: torch.zeros(2, n, 1, 32, 32, dtype=torch.bool),
     "sample(x, n=2) returned dtype torch.bool, expected a floating-point tensor [B=2, n=2, K=1, H=32, W=32]"),
])
def test_broken_inference_methods(method, result, message):
    class Broken(TinyLatentModel):
        """``method`` replaced by ``result`` where the check calls it, not inside forward and sample (which use
        prior and decode)."""

        inside = False

        def forward(self, image: torch.Tensor, masks: torch.Tensor) -> TrainOutput:
            self.inside = True
            try:
                return super().forward(image, masks)
            finally:
                self.inside = False

        def sample(self, image: torch.Tensor, n: int) -> torch.Tensor:
            self.inside = True
            try:
                return super().sample(image, n)
            finally:
                self.inside = False

        def __getattribute__(self, name: str) -> Any:
            if name == method and not object.__getattribute__(self, "inside"):
                return result.__get__(self)
            return super().__getattribute__(name)

    with pytest.raises(ProbsegError, match=r"^model plugin 'my-model': " + re.escape(message)):
        run_check(Broken(3))


class WrongSample(TinyLatentModel):
    def sample(self, image: torch.Tensor, n: int) -> torch.Tensor:
        return super().sample(image, n)[:, :, 0]


def test_run_fails_before_training_naming_the_plugin(monkeypatch, tmp_path, tiny_preset, run_main):
    spec = replace(TINY_SPEC, name="bad-sample", factory=WrongSample)
    install_fake_distribution(monkeypatch, "probseg-bad", {"fake_bad": make_model_plugin_module(spec, "fake_bad")})
    import probseg_bench.training

    def no_training(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("training started")

    monkeypatch.setattr(probseg_bench.training, "train_fold", no_training)
    code, _, err = run_main("run", "--model", "bad-sample", "--dataset", "lidc-sample", "--preset", tiny_preset,
                            "--fold", "0", "--storage", str(tmp_path / "r.db"), "--run-dir", str(tmp_path / "runs"))
    assert code == 2, err
    assert ("model plugin 'bad-sample': sample(x, n=2) returned shape [2, 2, 128, 128], expected [B=2, n=2, K=1, "
            "H=128, W=128]") in " ".join(err.split())


class NormTinyModel(TinyLatentModel):
    """With batch normalisation and dropout: the check must leave running statistics and modes alone."""

    def __init__(self, latent_dim: int, in_channels: int = 1, width: int = 4, **_: Any) -> None:
        super().__init__(latent_dim, in_channels, width)
        self.features = nn.Sequential(nn.Conv2d(in_channels, width, 3, padding=1), nn.BatchNorm2d(width),
                                      nn.Dropout(0.2))  # type: ignore[assignment]


def test_the_check_does_not_change_a_training(monkeypatch, tiny_preset):
    spec = replace(TINY_SPEC, name="norm-tiny", factory=NormTinyModel)
    install_fake_distribution(monkeypatch, "probseg-norm", {"fake_norm": make_model_plugin_module(spec, "fake_norm")})
    exp = Experiment.prepare(check_request(RunRequest(model="norm-tiny", dataset="lidc-sample", preset=tiny_preset,
                                                      folds=(0,), device="cpu")))
    model_hp, reg_hp = exp.hyperparameters()
    import probseg_bench.plugin_check

    calls: list[str] = []
    real = probseg_bench.plugin_check.check_model
    monkeypatch.setattr(probseg_bench.plugin_check, "check_model", lambda *a: calls.append(a[0]) or real(*a))
    checked, checked_result = exp.train(3, 0, model_hp, reg_hp)
    monkeypatch.setattr(probseg_bench.plugin_check, "check_model", lambda *a: None)
    plain, plain_result = exp.train(3, 0, model_hp, reg_hp)
    assert calls == ["norm-tiny"]
    assert [h.train_loss for h in checked_result.history] == [h.train_loss for h in plain_result.history]
    assert [h.val_loss for h in checked_result.history] == [h.val_loss for h in plain_result.history]
    for key, value in plain.state_dict().items():
        assert torch.equal(checked.state_dict()[key], value), key


@pytest.mark.parametrize(("changes", "message"), [
    ({"level_sizes": lambda o: (2, 0, 1)}, r"level_sizes = \(2, 0, 1\), expected positive integers"),
    ({"level_sizes": lambda o: (1, 2), "level_weights": lambda o: (1.0, 4.0, 16.0)},
     "3 level_weights for 2 level_sizes"),
    ({"level_weights": lambda o: (1.0,)}, "level_weights without level_sizes"),
    ({"level_sizes": lambda o: (2, 2)}, r"prior.loc of shape \[2, 3\], expected \[B=2, d=4\]"),
])
def test_hierarchical_level_fields_are_checked(changes, message):
    with pytest.raises(ProbsegError, match=message):
        run_check(broken_forward(**changes)(3))


def test_a_hierarchical_model_passes_with_its_flattened_size():
    """level_sizes summing to d (one block of 1 and one of 2) pass; D replaces d in the shapes."""
    run_check(broken_forward(level_sizes=lambda o: (1, 2), level_weights=lambda o: (1.0, 4.0))(3))
