"""Find a stored fold, rebuild its model from the checkpoint (``weights_only=True``) and its test split."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from probseg_bench.api import MultiRaterData
from probseg_bench.connections import display_url
from probseg_bench.errors import ProbsegError
from probseg_bench.readback import load_torch_file
from probseg_bench.results import FoldRecord, ResultsStore

CHECKPOINT_WHAT = "best checkpoint of this stored run"
CHECKPOINT_REMEDY = ("restore it from a copy, or train the fold again into another --storage (this one's record "
                     "keeps it skipped)")


@dataclass
class LoadedRun:
    """A stored fold with its trained model (on ``device``, eval mode) and its test images."""

    record: FoldRecord
    model: Any
    test: MultiRaterData
    device: Any


def find_record(store: ResultsStore, model: str, dataset: str, latent_dim: int | None, fold: int | None,
                config_hash: str | None = None) -> FoldRecord:
    """The stored record of (model, dataset[, latent dim][, fold][, configuration hash prefix]).

    The latent dim and the configuration must be unambiguous (one (d, configuration) among the matching
    records); without ``fold``, the lowest stored fold of that configuration.

    Raises:
        ProbsegError: no such record (the message lists what is stored for the model and dataset), or several
            configurations / latent dims match (the message lists them with their hashes).
    """
    records = store.records([model], [dataset])
    prefix = (config_hash or "").strip().lower()
    matching = [r for r in records if (latent_dim is None or r.latent_dim == latent_dim)
                and (fold is None or r.fold == fold) and r.config_hash.startswith(prefix)]
    if not matching:
        have = sorted({(r.latent_dim, r.fold, r.config_hash[:8]) for r in records})
        listing = ", ".join(f"d={d} fold {f} config {h}" for d, f, h in have)
        wanted = ", ".join([f"latent dim {latent_dim}" if latent_dim is not None else "any latent dim",
                            f"fold {fold}" if fold is not None else "any fold",
                            *([f"config {prefix}"] if prefix else [])])
        others = sorted({r.model for r in store.records(datasets=[dataset])} - {model})
        stored = (f"stored of {model} on {dataset}: {listing}" if listing else f"nothing of {model} on {dataset} is "
                  f"stored" + (f" (models stored on {dataset}: {', '.join(others)})" if others else ""))
        raise ProbsegError(f"no stored run of {model} on {dataset} ({wanted}) in {display_url(store.url)}; {stored}")
    configs = sorted({(r.latent_dim, r.config_hash) for r in matching})
    if len(configs) > 1:
        listing = "; ".join(f"d={d} config {h[:8]} ({_describe(matching, d, h)})" for d, h in configs)
        raise ProbsegError(f"{model} on {dataset}: several stored runs match: {listing}; choose one with "
                           "--latent-dim and --config-hash PREFIX")
    return min(matching, key=lambda r: r.fold)


def _describe(records: list[FoldRecord], d: int, config: str) -> str:
    recs = [r for r in records if r.latent_dim == d and r.config_hash == config]
    first = recs[0]
    return ", ".join(x for x in (first.preset, first.variant, f"seed {first.seed}" if first.seed else "",
                                 "folds " + ",".join(str(r.fold) for r in sorted(recs, key=lambda r: r.fold))) if x)


def load_run(record: FoldRecord, data_root: Path | None, device_name: str = "auto") -> LoadedRun:
    """Rebuild the record's model from its checkpoint and its test split from the dataset.

    Raises:
        ProbsegError: missing checkpoint, a damaged one (one line, torch's message not shown: it suggests loading
            with ``weights_only=False``), a checkpoint of another model / dataset / latent dim / fold, a dataset
            whose split no longer matches the record's split hash, or whose content is not the data the record was
            computed on (its ``data_fingerprint``; a record stored before fingerprints is checked by its split only).
    """
    from probseg_bench.data.crop import center_crop
    from probseg_bench.data.fingerprint import data_fingerprint, short
    from probseg_bench.data.loading import load_dataset
    from probseg_bench.data.splits import protocol_splits
    from probseg_bench.plugins import get_plugins
    from probseg_bench.request import resolve_device

    if record.checkpoint is None or not Path(record.checkpoint).is_file():
        raise ProbsegError(f"{record.checkpoint}: the run's checkpoint is missing (moved or deleted?)")
    ckpt = load_torch_file(record.checkpoint, CHECKPOINT_WHAT, CHECKPOINT_REMEDY,
                           required=("model_hyperparameters", "state_dict"))
    expected = {"model": record.model, "dataset": record.dataset, "latent_dim": record.latent_dim,
                "fold": record.fold, "config_hash": record.config_hash}
    found = {k: ckpt.get(k) for k in expected} if isinstance(ckpt, dict) else {}
    if found != expected:
        raise ProbsegError(f"{record.checkpoint}: checkpoint of {found}, but the record is {expected}")
    plugins = get_plugins()
    dataset_spec = plugins.datasets.get(record.dataset)
    data = load_dataset(dataset_spec, data_root, record.dataset_params)
    protocol = record.protocol
    if protocol.get("crop") is not None:  # the run's protocol cropped the images (e.g. the quick preset)
        data = center_crop(data, int(protocol["crop"]))
    splits = protocol_splits(data.groups, data.metadata, str(protocol.get("split", "cv")), int(protocol["n_folds"]),
                             float(protocol["test_fraction"]), record.seed, protocol.get("split_seed"),
                             f"dataset '{record.dataset}'")
    if splits.split_hash != record.split_hash:
        raise ProbsegError(f"dataset '{record.dataset}' (data root {data_root}) no longer gives the split of the "
                           "stored run: the data changed")
    found_data = None if record.data_fingerprint is None else data_fingerprint(data)
    if found_data != record.data_fingerprint:
        raise ProbsegError(f"dataset '{record.dataset}' (data root {data_root}): its content (data "
                           f"{short(found_data)}) is not the data the stored run was computed on (data "
                           f"{short(record.data_fingerprint)}): the data changed; give the run's --data-root, or rerun")
    device = resolve_device(device_name)
    try:
        model = plugins.models.get(record.model).factory(
            latent_dim=record.latent_dim, in_channels=data.images.shape[1], **ckpt["model_hyperparameters"]
        )
        model.load_state_dict(ckpt["state_dict"])
    except ProbsegError:
        raise
    except (TypeError, ValueError, RuntimeError, KeyError):  # torch's messages span lines: not shown
        raise ProbsegError(f"{record.checkpoint}: the {CHECKPOINT_WHAT} does not fit model '{record.model}' (damaged, "
                           f"or written by another version of its code); {CHECKPOINT_REMEDY}") from None
    return LoadedRun(record, model.to(device).eval(), data.subset(splits.test), device)
