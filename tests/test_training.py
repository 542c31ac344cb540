"""Training: the objective's value, the schedule, best-checkpoint selection, divergence, reproducibility."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch.distributions import Normal

from probseg_bench.api import MultiRaterData, TrainOutput
from probseg_bench.training import (
    Objective,
    TrainConfig,
    TrainingDivergedError,
    train_fold,
    validation_loss,
    warmup_cosine,
)
from probseg_regularizers.kl import KLDivergence

from fakeplugin import TinyLatentModel


def synthetic(n: int = 12, a: int = 3, size: int = 16, seed: int = 0) -> MultiRaterData:
    rng = np.random.default_rng(seed)
    images = rng.random((n, 1, size, size), dtype=np.float32)
    masks = (images[:, None, 0] > rng.uniform(0.3, 0.7, (n, a, 1, 1))).astype(np.uint8)
    return MultiRaterData(images=images, masks=masks, groups=np.arange(n))


def test_warmup_then_cosine():
    total, warm = 100, 10
    assert warmup_cosine(0, total, warm) == pytest.approx(0.1)
    assert warmup_cosine(9, total, warm) == pytest.approx(1.0)
    assert warmup_cosine(10, total, warm) == pytest.approx(1.0)
    assert warmup_cosine(55, total, warm) == pytest.approx(0.5)
    assert warmup_cosine(100, total, warm) == pytest.approx(0.0, abs=1e-12)


class Constant:
    def __init__(self, value: float) -> None:
        self.value = value

    def __call__(self, out: TrainOutput) -> torch.Tensor:
        return torch.full((out.logits.shape[0],), self.value)


def test_objective_is_bce_summed_over_pixels_plus_weighted_terms():
    b, h, w = 2, 4, 5
    ones = torch.ones(b, 3)
    out = TrainOutput(
        logits=torch.zeros(b, 1, h, w), target=torch.ones(b, 1, h, w), prior=Normal(ones, ones),
        posterior=Normal(ones, ones), posterior_samples=torch.zeros(b, 1, 3), prior_samples=torch.zeros(b, 1, 3),
        annotation_index=torch.zeros(b, dtype=torch.long),
    )
    loss, parts = Objective([("kl", 3.0, Constant(2.0)), ("other", 0.5, Constant(4.0))])(out)
    # logit 0 -> BCE ln 2 per pixel, summed over 20 pixels, averaged over the batch
    assert parts["reconstruction"].item() == pytest.approx(h * w * math.log(2))
    assert loss.item() == pytest.approx(h * w * math.log(2) + 3.0 * 2.0 + 0.5 * 4.0)


def fit(seed: int = 0, epochs: int = 4):
    data = synthetic()
    torch.manual_seed(seed)
    model = TinyLatentModel(latent_dim=2)
    objective = Objective([("kl", 1.0, KLDivergence())])
    config = TrainConfig(epochs=epochs, warmup_epochs=1, batch_size=4, lr=1e-2, seed=seed)
    result = train_fold(model, objective, data.subset(np.arange(8)), data.subset(np.arange(8, 12)),
                        config, torch.device("cpu"))
    return model, objective, data, result


def test_the_checkpoint_with_the_lowest_validation_loss_is_kept():
    model, objective, data, result = fit(epochs=6)
    vals = [h.val_loss for h in result.history]
    assert len(vals) == 6
    assert result.best_val_loss == min(vals)
    assert result.best_epoch == vals.index(min(vals)) + 1
    model.load_state_dict(result.best_state)
    x, y = torch.as_tensor(data.images[8:]), torch.as_tensor(data.masks[8:])
    loss, er = validation_loss(model, objective, x, y, 4, seed=1)
    assert loss == pytest.approx(result.best_val_loss, rel=1e-5)
    best_log = result.history[result.best_epoch - 1]
    assert er == pytest.approx(best_log.val_effective_rank, rel=1e-6) and 1.0 <= er <= 2.0  # latent_dim 2
    assert result.steps == 6 * 2


def test_same_seed_same_curves():
    a, b = fit(seed=3)[3], fit(seed=3)[3]
    assert [h.val_loss for h in a.history] == [h.val_loss for h in b.history]
    assert [h.train_loss for h in a.history] == [h.train_loss for h in b.history]


def test_non_finite_loss_stops_with_epoch_step_and_term():
    data = synthetic()
    model = TinyLatentModel(latent_dim=2)
    objective = Objective([("kl", 1.0, Constant(float("nan")))])
    config = TrainConfig(epochs=2, warmup_epochs=1, batch_size=4)
    with pytest.raises(TrainingDivergedError, match=r"epoch 1, step 1 \(term: kl\)"):
        train_fold(model, objective, data.subset(np.arange(8)), data.subset(np.arange(8, 12)), config,
                   torch.device("cpu"))
