"""The `lidc` pickle and `lidc-crops` PNG plugins, the converted format and the `data` commands, on small files
written here in the real formats."""

from __future__ import annotations

import json
import pickle
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from probseg_bench.cli import app, main
from probseg_bench.data.converted import read_converted
from probseg_bench.errors import ProbsegError
from probseg_bench.results import ResultsStore
from probseg_datasets.lidc import load_lidc, load_lidc_crops


def lidc_entries(n: int, annotators: int = 4, size: int = 16, seed: int = 0, prefix: str = "") -> dict:
    rng = np.random.default_rng(seed)
    out = {}
    for i in range(n):
        image = rng.random((size, size), dtype=np.float32)
        masks = [(rng.random((size, size)) > 0.7).astype(np.uint8) for _ in range(annotators)]
        out[f"{prefix}{i:04d}.png"] = {"image": image, "masks": masks, "series_uid": f"1.3.6.{i // 3}"}
    return out


def write_pickle(path: Path, entries: dict, protocol: int = pickle.DEFAULT_PROTOCOL) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps(entries, protocol=protocol))
    return path


def test_pickle_is_refused_without_trust(tmp_path):
    write_pickle(tmp_path / "data_lidc.pickle", lidc_entries(3))
    with pytest.raises(ProbsegError, match=r"data_lidc\.pickle: refusing to unpickle.*--trust-pickle.*data convert"):
        load_lidc(tmp_path)


@pytest.mark.parametrize(("protocol", "mask_dtype"), [(2, np.uint8), (4, np.float64), (5, np.uint8), (5, np.float32)])
def test_trusted_pickle_loads_compactly_and_groups_by_series(tmp_path, protocol, mask_dtype):
    entries = lidc_entries(7)
    for e in entries.values():
        e["masks"] = [m.astype(mask_dtype) for m in e["masks"]]
    write_pickle(tmp_path / "data_lidc.pickle", entries, protocol)
    data = load_lidc(tmp_path, trust_pickle=True)
    keys = sorted(entries)
    assert data.images.dtype == np.float16 and data.images.shape == (7, 1, 16, 16)
    np.testing.assert_allclose(data.images[:, 0], np.stack([entries[k]["image"] for k in keys]), atol=2.5e-4)
    np.testing.assert_array_equal(data.masks, np.stack([np.stack(entries[k]["masks"]) for k in keys]))
    assert list(data.groups) == [entries[k]["series_uid"] for k in keys]
    assert list(data.metadata["key"]) == keys


def test_several_pickles_and_another_annotator_count(tmp_path):
    write_pickle(tmp_path / "part1.pickle", lidc_entries(4, annotators=3, prefix="a", seed=1))
    write_pickle(tmp_path / "part2.pickle", lidc_entries(5, annotators=3, prefix="b", seed=2))
    data = load_lidc(tmp_path, trust_pickle=True)
    assert data.masks.shape == (9, 3, 16, 16)
    assert list(data.metadata["key"][:2]) == ["a0000.png", "a0001.png"]
    one = lidc_entries(5, annotators=3, prefix="b", seed=2)
    np.testing.assert_array_equal(data.masks[4], np.stack(one["b0000.png"]["masks"]))


def corrupt(entries: dict, what: str) -> dict:
    e = entries["0001.png"]
    if what == "nan":
        e["image"][2, 3] = np.nan
    elif what == "3d":
        e["image"] = np.zeros((16, 16, 3), np.float32)
    elif what == "values":
        e["masks"][1][0, 0] = 2
    elif what == "shape":
        e["masks"][0] = np.zeros((15, 16), np.uint8)
    elif what == "annotators":
        e["masks"] = e["masks"][:3]
    elif what == "keys":
        del e["series_uid"]
    return entries


@pytest.mark.parametrize(("what", "message"), [
    ("nan", r"entry '0001.png': image contains NaN"),
    ("3d", r"entry '0001.png': expected a 2-D image, got shape \(16, 16, 3\)"),
    ("values", r"entry '0001.png' mask 1: mask values must be \{0, 1\} or \{0, 255\}, found 0, 1, 2"),
    ("shape", r"entry '0001.png': mask 0 has shape \(15, 16\)"),
    ("keys", r"entry '0001.png': expected a dict with image, masks and series_uid"),
])
def test_bad_pickle_entries_are_named(tmp_path, what, message):
    write_pickle(tmp_path / "bad.pickle", corrupt(lidc_entries(3), what))
    with pytest.raises(ProbsegError, match=message):
        load_lidc(tmp_path, trust_pickle=True)


def test_an_entry_with_fewer_masks_is_dropped_with_one_warning_line(tmp_path):
    from probseg_bench.data.loading import DatasetWarning

    path = write_pickle(tmp_path / "x.pickle", corrupt(lidc_entries(3), "annotators"))  # 0001.png: 3 masks of 4
    with pytest.warns(DatasetWarning) as caught:
        data = load_lidc(tmp_path, trust_pickle=True)
    assert [str(w.message) for w in caught] == [
        f"lidc: dropped entry '0001.png' of {path}: 3 annotator masks where the other 2 entries have 4; every item "
        "needs the same annotators"
    ]
    assert list(data.metadata["key"]) == ["0000.png", "0002.png"] and data.masks.shape == (2, 4, 16, 16)
    write_pickle(tmp_path / "x.pickle", corrupt(lidc_entries(2), "annotators"))  # 1 entry of 4, 1 of 3: no majority
    with pytest.raises(ProbsegError, match=r"x\.pickle: entry '0001\.png': 3 annotator masks, expected 4"):
        load_lidc(tmp_path, trust_pickle=True)


def test_several_pickles_keep_the_annotator_count_of_most_entries(tmp_path):
    from probseg_bench.data.loading import DatasetWarning

    write_pickle(tmp_path / "part1.pickle", lidc_entries(2, annotators=5, prefix="a", seed=1))
    write_pickle(tmp_path / "part2.pickle", lidc_entries(4, annotators=3, prefix="b", seed=2))
    part3 = lidc_entries(3, annotators=3, prefix="c", seed=3)
    part3["c0001.png"]["masks"].append(np.zeros((16, 16), np.uint8))
    write_pickle(tmp_path / "part3.pickle", part3)
    with pytest.warns(DatasetWarning) as caught:
        data = load_lidc(tmp_path, trust_pickle=True)
    assert [str(w.message).split(":")[1] for w in caught] == [
        " dropped entry 'a0000.png' of part1.pickle", " dropped entry 'a0001.png' of part1.pickle",
        " dropped entry 'c0001.png' of part3.pickle"]
    assert "5 annotator masks where the other 6 entries have 3" in str(caught[0].message)
    assert list(data.metadata["key"]) == ["b0000.png", "b0001.png", "b0002.png", "b0003.png", "c0000.png",
                                          "c0002.png"]
    np.testing.assert_array_equal(data.masks[5], np.stack(part3["c0002.png"]["masks"]))
    assert data.groups[5] == part3["c0002.png"]["series_uid"]


def test_truncated_pickle_and_missing_or_empty_root(tmp_path):
    blob = pickle.dumps(lidc_entries(3))
    (tmp_path / "cut.pickle").write_bytes(blob[: len(blob) // 2])
    with pytest.raises(ProbsegError, match=r"cut\.pickle: truncated or not a pickle"):
        load_lidc(tmp_path, trust_pickle=True)
    with pytest.raises(ProbsegError, match="needs --data-root"):
        load_lidc(None)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ProbsegError, match=r"no \.pickle files"):
        load_lidc(tmp_path / "empty")


def invoke(*args: str):
    return CliRunner().invoke(app, list(args))


def test_convert_once_then_read_memory_mapped_without_trust(tmp_path, monkeypatch, tiny_preset):
    write_pickle(tmp_path / "src" / "data_lidc.pickle", lidc_entries(24, size=32))
    out = tmp_path / "converted"
    refused = invoke("data", "convert", "lidc", "--data-root", str(tmp_path / "src"), "--output", str(out))
    assert refused.exit_code == 2 if refused.exception is None else isinstance(refused.exception, ProbsegError)
    assert not out.exists()
    done = invoke("data", "convert", "lidc", "--data-root", str(tmp_path / "src"), "--trust-pickle",
                  "--output", str(out))
    assert done.exit_code == 0, done.output
    data, info = read_converted(out)
    assert isinstance(data.images, np.memmap) and isinstance(data.masks, np.memmap)
    direct = load_lidc(tmp_path / "src", trust_pickle=True)
    np.testing.assert_array_equal(data.images, direct.images)
    picked = data.subset(np.array([3, 0, 17]))  # chunked copy out of the memory map
    assert not isinstance(picked.images, np.memmap)
    np.testing.assert_array_equal(picked.masks, direct.masks[[3, 0, 17]])
    assert (info["dataset"], info["n"], info["annotators"]) == ("lidc", 24, 4)
    assert not (out / "data_lidc.pickle").exists() and not list(out.glob("*.pickle"))
    summary = json.loads(invoke("data", "inspect", "lidc", "--data-root", str(out), "--format", "json").stdout)
    assert (summary["images"], summary["groups"], summary["annotators"], summary["height"], summary["width"]) == (
        24, 8, 4, 32, 32)
    again = invoke("data", "convert", "lidc", "--data-root", str(tmp_path / "src"), "--trust-pickle",
                   "--output", str(out))
    assert isinstance(again.exception, ProbsegError) and "not empty" in str(again.exception)
    monkeypatch.chdir(tmp_path)
    run = invoke("run", "--model", "punet", "--dataset", "lidc", "--data-root", str(out), "--preset", tiny_preset,
                 "-d", "2", "--fold", "0", "--hp", "filters=4,8", "--hp", "convs_per_block=1", "--format", "json")
    assert run.exit_code == 0, run.output
    assert json.loads(run.stdout)[0]["dataset"] == "lidc"
    other = invoke("data", "inspect", "lidc-crops", "--data-root", str(out))
    assert isinstance(other.exception, ProbsegError) and "a converted 'lidc' dataset" in str(other.exception)


def test_inspect_counts_on_hand_made_masks(tmp_path):
    entries = lidc_entries(2, annotators=2, size=4)
    entries["0000.png"]["masks"] = [np.zeros((4, 4), np.uint8), np.zeros((4, 4), np.uint8)]  # IoU 1 (both empty)
    a, b = np.zeros((4, 4), np.uint8), np.zeros((4, 4), np.uint8)
    a[0, :2], b[0, 1:3] = 1, 1  # IoU 1/3
    entries["0001.png"]["masks"] = [a, b]
    write_pickle(tmp_path / "x.pickle", entries)
    s = json.loads(invoke("data", "inspect", "lidc", "--data-root", str(tmp_path), "--trust-pickle",
                          "--format", "json").stdout)
    assert s["empty_mask_fraction"] == pytest.approx(2 / 4)
    assert s["mean_pairwise_annotator_iou"] == pytest.approx((1 + 1 / 3) / 2)
    assert s["foreground_fraction"] == pytest.approx((0 + 0 + 2 / 16 + 2 / 16) / 4)


# ------------------------------------------------------------------------------------------------- lidc-crops
def write_crops(root: Path, split: str, patient: str, n: int, annotators=(1, 2, 3, 4), size: int = 180) -> None:
    rng = np.random.default_rng(len(patient) + n)
    for c in range(n):
        stem = f"z-{100 + c}.5_c{c}"
        (root / split / "images" / patient).mkdir(parents=True, exist_ok=True)
        (root / split / "gt" / patient).mkdir(parents=True, exist_ok=True)
        image = rng.integers(0, 255, (size, size), dtype=np.uint8)
        image[90, 90] = 255
        Image.fromarray(image).save(root / split / "images" / patient / f"{stem}.png")
        for a in annotators:
            mask = np.zeros((size, size), np.uint8)
            mask[85 : 85 + a, 88:95] = 255
            Image.fromarray(mask).save(root / split / "gt" / patient / f"{stem}_l{a}.png")


def test_crops_discover_annotators_crop_and_group(tmp_path):
    write_crops(tmp_path, "train", "LIDC-IDRI-0001", 2)
    write_crops(tmp_path, "test", "LIDC-IDRI-0002", 1)
    data = load_lidc_crops(tmp_path)
    assert data.images.shape == (3, 1, 128, 128) and data.masks.shape == (3, 4, 128, 128)
    # centre crop 180 -> 128 starts at 26: pixel (90, 90) lands at (64, 64)
    assert float(data.images[0, 0, 64, 64]) == 1.0
    assert data.masks[0, 2].sum() == 3 * 7 and data.masks[0, 2, 85 - 26, 88 - 26] == 1
    assert sorted(set(data.groups)) == ["LIDC-IDRI-0001", "LIDC-IDRI-0002"]
    assert sorted(set(data.metadata["split"])) == ["test", "train"]


def test_crops_numbered_from_zero_without_split_folders(tmp_path):
    write_crops(tmp_path, ".", "p1", 2, annotators=(0, 1, 2))
    assert load_lidc_crops(tmp_path).masks.shape == (2, 3, 128, 128)


def test_crops_bad_inputs(tmp_path):
    write_crops(tmp_path, "train", "p1", 2)
    (tmp_path / "train" / "gt" / "p1" / "z-101.5_c1_l3.png").unlink()
    with pytest.raises(ProbsegError, match=r"z-101\.5_c1\.png: annotators \[1, 2, 4\] differ from \[1, 2, 3, 4\]"):
        load_lidc_crops(tmp_path)
    other = tmp_path / "b"
    write_crops(other, "train", "p1", 1)
    Image.fromarray(np.full((180, 180), 7, np.uint8)).save(other / "train" / "gt" / "p1" / "z-100.5_c0_l2.png")
    with pytest.raises(ProbsegError, match=r"_l2\.png: mask values must be \{0, 1\} or \{0, 255\}, found 7"):
        load_lidc_crops(other)
    (other / "train" / "gt" / "p1" / "z-100.5_c0_l2.png").write_bytes(b"\x89PNG\r\n truncated")
    with pytest.raises(ProbsegError, match=r"_l2\.png: not a readable image"):
        load_lidc_crops(other)
    with pytest.raises(ProbsegError, match="no images/ folder"):
        load_lidc_crops(tmp_path / "train" / "gt")


def test_crops_drop_a_crop_with_fewer_annotation_files(tmp_path):
    from probseg_bench.data.loading import DatasetWarning

    write_crops(tmp_path, "train", "p1", 3)
    (tmp_path / "train" / "gt" / "p1" / "z-101.5_c1_l3.png").unlink()
    with pytest.warns(DatasetWarning, match=r"^lidc-crops: dropped crop train/images/p1/z-101\.5_c1\.png: 3 "
                      r"annotation files where the other 2 crops have 4 \(missing _l3\.png\)"):
        data = load_lidc_crops(tmp_path)
    assert list(data.metadata["name"]) == ["z-100.5_c0", "z-102.5_c2"] and data.masks.shape == (2, 4, 128, 128)


def test_bad_input_through_the_cli_is_one_line_and_stores_nothing(tmp_path, monkeypatch, capsys):
    write_pickle(tmp_path / "bad.pickle", corrupt(lidc_entries(3), "nan"))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["probseg-bench", "run", "--model", "punet", "--dataset", "lidc",
                                      "--data-root", str(tmp_path), "--trust-pickle"])
    with pytest.raises(SystemExit) as exit_info:
        main()
    err = capsys.readouterr().err
    assert exit_info.value.code == 2
    assert len(err.strip().splitlines()) == 1 and "bad.pickle: entry '0001.png': image contains NaN" in err
    assert ResultsStore().records() == []


def test_crops_run_one_fold_end_to_end(tmp_path, monkeypatch, tiny_preset):
    for p in range(8):
        write_crops(tmp_path / "crops", "train", f"LIDC-IDRI-{p:04d}", 1)
    monkeypatch.chdir(tmp_path)
    run = invoke("run", "--model", "spunet", "--dataset", "lidc-crops", "--data-root", str(tmp_path / "crops"),
                 "--preset", tiny_preset, "-d", "2", "--fold", "2", "--hp", "filters=4,8", "--hp",
                 "convs_per_block=1", "--format", "json")
    assert run.exit_code == 0, run.output
    row = json.loads(run.stdout)[0]
    assert (row["dataset"], row["folds"], row["n_test"]) == ("lidc-crops", 1, 2)
    assert row["hm_iou_mean"] + row["ewd_mean"] == pytest.approx(1.0)
