"""Presets: what `quick` changes from `paper`, the centre crop, the augmentation strength reaching training."""

from __future__ import annotations

import numpy as np
import pytest

from probseg_bench.api import MultiRaterData
from probseg_bench.data.crop import center_crop
from probseg_bench.errors import ProbsegError
from probseg_bench.experiment import Experiment
from probseg_bench.plugins import get_plugins
from probseg_bench.presets import PRESETS, Augmentation, Preset
from probseg_bench.request import RunRequest, check_request


def stack(n: int, h: int, w: int) -> MultiRaterData:
    images = np.arange(n * h * w, dtype=np.float32).reshape(n, 1, h, w)
    masks = np.zeros((n, 2, h, w), np.uint8)
    masks[:, :, h // 2, w // 2] = 1
    return MultiRaterData(images=images, masks=masks, groups=np.arange(n), metadata={"name": np.arange(n)})


def test_center_crop_takes_the_central_window_by_hand():
    data = stack(2, 6, 7)
    out = center_crop(data, 4)
    # rows start at (6 - 4) // 2 = 1, columns at (7 - 4) // 2 = 1
    assert out.images.shape == (2, 1, 4, 4) and out.masks.shape == (2, 2, 4, 4)
    np.testing.assert_array_equal(out.images[0, 0], data.images[0, 0, 1:5, 1:5])
    np.testing.assert_array_equal(out.masks, data.masks[:, :, 1:5, 1:5])
    assert out.masks[:, :, 2, 2].all()  # the centre pixel (3, 3) of the 6 x 7 image is at (2, 2)
    np.testing.assert_array_equal(out.groups, data.groups)
    np.testing.assert_array_equal(out.metadata["name"], data.metadata["name"])


def test_center_crop_keeps_sides_already_small_and_refuses_a_bad_size():
    data = stack(1, 5, 9)
    out = center_crop(data, 6)
    assert out.images.shape == (1, 1, 5, 6)
    np.testing.assert_array_equal(out.images[0, 0], data.images[0, 0, :, 1:7])
    with pytest.raises(ProbsegError, match="crop"):
        center_crop(data, 0)


def test_center_crop_of_a_memory_map_stays_a_memory_map(tmp_path):
    data = stack(3, 8, 8)
    np.save(tmp_path / "images.npy", data.images)
    np.save(tmp_path / "masks.npy", data.masks)
    mapped = MultiRaterData(images=np.load(tmp_path / "images.npy", mmap_mode="r"),
                            masks=np.load(tmp_path / "masks.npy", mmap_mode="r"), groups=data.groups)
    out = center_crop(mapped, 4)
    assert isinstance(out.images, np.memmap) and isinstance(out.masks, np.memmap)
    np.testing.assert_array_equal(out.subset(np.array([2, 0])).images, data.images[[2, 0]][..., 2:6, 2:6])


def test_quick_differs_from_paper_only_where_its_description_says():
    paper, quick = PRESETS["paper"], PRESETS["quick"]
    differ = {k for k in paper.__dataclass_fields__ if k not in ("name", "description")
              and getattr(paper, k) != getattr(quick, k)}
    assert differ == {"steps", "warmup_epochs", "batch_size", "lr", "augmentation", "crop_to_roi", "model_defaults"}
    assert paper.augmentation == Augmentation(180.0, 0.2, 0.1, 0.3) and not paper.crop_to_roi
    text = quick.description
    assert f"{quick.steps} optimisation steps of batch {quick.batch_size}" in text
    assert "lr 3e-4" in text and quick.lr == 3e-4 and "filters 16,32,64,96" in text and "32 x 32 centre crop" in text
    a = quick.augmentation
    assert f"rotation ±{a.rotation:g}°, scale ±{a.scale:g}, translation {a.translate:g}, shear {a.shear:g}" in text
    assert dict(quick.model_defaults) == {"filters": "16,32,64,96", "res_blocks": "1", "ema_decay": "0.99",
                                          "validation_timesteps": "4"}
    assert "res_blocks 1, ema_decay 0.99, validation_timesteps 4" in text
    ccdm_only = {"res_blocks", "ema_decay", "validation_timesteps"}
    declared = {m: {h.name for h in get_plugins().models.get(m).hyperparameters} for m in get_plugins().models.names()}
    assert [m for m, names in declared.items() if names & ccdm_only] == ["ccdm"]


def test_a_step_budget_gives_the_same_steps_whatever_the_dataset_size():
    from probseg_bench.api import ProtocolDefaults

    quick = PRESETS["quick"]
    dataset = ProtocolDefaults(epochs=200, warmup_epochs=5, roi_size=32)
    # lidc-sample: 22 non-test items, 3 folds -> 14.67 training items -> 4 steps of 4 per epoch -> 400 epochs
    assert quick.schedule(dataset, 22 * 2 / 3) == (400, 2)
    # synthetic, 160 images: 128 non-test -> 85.3 training items -> 22 steps per epoch -> round(72.7) = 73 epochs
    assert quick.schedule(dataset, 128 * 2 / 3) == (73, 2)
    assert quick.schedule(dataset, 100_000) == (1, 1)  # at least one epoch; warm-up never longer than training
    assert PRESETS["paper"].schedule(dataset) == (200, 5)
    with pytest.raises(ProbsegError, match="step budget"):
        quick.schedule(dataset)
    assert quick.crop(dataset) == 32 and PRESETS["paper"].crop(dataset) is None
    assert quick.crop(ProtocolDefaults()) is None  # a dataset without a declared region of interest


def test_an_epochs_override_replaces_a_step_budget():
    from probseg_bench.api import ProtocolDefaults
    from probseg_bench.presets import apply_protocol_overrides

    two = apply_protocol_overrides(PRESETS["quick"], {"epochs": 2})
    assert two.steps is None and two.schedule(ProtocolDefaults(), 15) == (2, 2)
    # batch 32, 8 training items: 1 step per epoch -> 10 epochs
    assert apply_protocol_overrides(PRESETS["paper"], {"steps": 10}).schedule(ProtocolDefaults(), 8) == (10, 5)
    with pytest.raises(ProbsegError, match="both given"):
        apply_protocol_overrides(PRESETS["quick"], {"epochs": 2, "steps": 3})


def test_the_preset_crop_and_augmentation_reach_the_data_and_the_training(monkeypatch):
    import probseg_bench.training as training

    monkeypatch.setitem(PRESETS, "cropped", Preset(
        name="cropped", description="t", epochs=1, warmup_epochs=1, batch_size=4, n_eval_samples=2, crop_to_roi=True,
        augmentation=Augmentation(rotation=90.0, scale=0.1, translate=0.05, shear=0.0),
    ))
    exp = Experiment.prepare(check_request(RunRequest(model="punet", dataset="lidc-sample", preset="cropped",
                                        hyperparameters={"filters": "4,8", "convs_per_block": 1})))
    assert exp.data.images.shape[-2:] == (32, 32) and exp.data.masks.shape[-2:] == (32, 32)
    seen = {}

    def fake_train_fold(model, objective, train, val, config, device, **kwargs):
        seen["config"], seen["shape"] = config, train.images.shape
        raise ProbsegError("stop here")

    monkeypatch.setattr(training, "train_fold", fake_train_fold)
    model_hp, reg_hp = exp.hyperparameters()
    with pytest.raises(ProbsegError, match="stop here"):
        exp.train(2, 0, model_hp, reg_hp)
    augmentation = seen["config"].augmentation
    assert (augmentation.rotation, augmentation.scale, augmentation.translate, augmentation.shear) == (
        90.0, (0.9, 1.1), 0.05, 0.0)
    assert seen["shape"][-2:] == (32, 32)
    settings = exp.protocol_settings()
    assert settings["crop"] == 32 and settings["augmentation"] == {
        "rotation": 90.0, "scale": 0.1, "translate": 0.05, "shear": 0.0}
