"""The plugin manager: hook specs, then entry points, then registration into typed registries.

Plugins come ONLY from the entry-point group ``probseg_bench`` (the built-ins too). A plugin module that fails
to import, or whose registration hook raises, is recorded in :attr:`Plugins.failures` and does not stop the
others from loading. Lookups raise :class:`ProbsegError` with the known names and a did-you-mean, and name the
failed entry points (with their errors when one plausibly provides the name asked for).
"""

from __future__ import annotations

import importlib.metadata as importlib_metadata
from dataclasses import dataclass, field
from functools import lru_cache

import pluggy

from probseg_bench import PROJECT, hookspecs
from probseg_bench.api import (
    DatasetSpec,
    ModelSpec,
    PluginFailure,
    PluginInfo,
    Registry,
    RegularizerSpec,
)
from probseg_bench.errors import PluginCollisionError

ENTRY_POINT_GROUP = "probseg_bench"

_KINDS: dict[str, tuple[str, type]] = {
    "model": ("probseg_bench_register_models", ModelSpec),
    "regularizer": ("probseg_bench_register_regularizers", RegularizerSpec),
    "dataset": ("probseg_bench_register_datasets", DatasetSpec),
}


@dataclass
class Plugins:
    """All registered plugins, by kind."""

    models: Registry
    regularizers: Registry
    datasets: Registry
    failures: list[PluginFailure] = field(default_factory=list)

    def all_info(self) -> list[PluginInfo]:
        """Every registered plugin, sorted by kind then name."""
        return [
            reg.info(name)
            for reg in (self.datasets, self.models, self.regularizers)
            for name in reg.names()
        ]


def _distribution_label(ep: importlib_metadata.EntryPoint) -> str:
    dist = getattr(ep, "dist", None)
    if dist is None:
        return "unknown distribution"
    return f"{dist.metadata['Name']} {dist.version}"


def load_plugins() -> Plugins:
    """Discover the entry points of group ``probseg_bench``, register them, and fill the registries.

    Raises:
        ProbsegError: when two plugins register the same name (the message names both distributions).
    """
    pm = pluggy.PluginManager(PROJECT)
    pm.add_hookspecs(hookspecs)
    failures: list[PluginFailure] = []
    providers: dict[str, tuple[str, str]] = {}
    for ep in sorted(importlib_metadata.entry_points(group=ENTRY_POINT_GROUP), key=lambda e: (e.name, e.value)):
        label = _distribution_label(ep)
        try:
            module = ep.load()
            name = f"{label}:{ep.name}"
            pm.register(module, name=name)
        except Exception as exc:  # a broken plugin must not break the others
            failures.append(PluginFailure(f"{ep.name} = {ep.value}", label, f"{type(exc).__name__}: {exc}"))
            continue
        providers[name] = (label, f"{ep.name} = {ep.value}")
    pm.check_pending()

    registries = {kind: Registry(kind, spec_type) for kind, (_, spec_type) in _KINDS.items()}
    for kind, (hook_name, _) in _KINDS.items():
        registry = registries[kind]
        for impl in reversed(getattr(pm.hook, hook_name).get_hookimpls()):  # registration order
            registry.set_provider(*providers[impl.plugin_name])
            try:
                impl.function(registry=registry)
            except PluginCollisionError:
                raise
            except Exception as exc:
                failures.append(
                    PluginFailure(providers[impl.plugin_name][1], providers[impl.plugin_name][0],
                                  f"{hook_name} failed: {type(exc).__name__}: {exc}", kind)
                )
    for kind, registry in registries.items():  # a lookup of an unknown name names these
        registry.failures = [f for f in failures if f.kind in (None, kind)]
    return Plugins(
        models=registries["model"],
        regularizers=registries["regularizer"],
        datasets=registries["dataset"],
        failures=failures,
    )


@lru_cache(maxsize=1)
def get_plugins() -> Plugins:
    """The process-wide plugin set (loaded once; :func:`reset_plugins` forgets it, e.g. in tests)."""
    return load_plugins()


def reset_plugins() -> None:
    """Forget the cached plugin set so the next :func:`get_plugins` rediscovers entry points."""
    get_plugins.cache_clear()
