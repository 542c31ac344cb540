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
from probseg_bench.api import DatasetSpec, LoggerSpec, ModelSpec, RegularizerSpec
from probseg_bench.errors import PluginCollisionError
from probseg_bench.registry import PluginFailure, PluginInfo, Registry, SpecT

ENTRY_POINT_GROUP = "probseg_bench"


@dataclass
class Plugins:
    """All registered plugins, by kind."""

    models: Registry[ModelSpec]
    regularizers: Registry[RegularizerSpec]
    datasets: Registry[DatasetSpec]
    failures: list[PluginFailure] = field(default_factory=list)
    loggers: Registry[LoggerSpec] = field(default_factory=lambda: Registry("logger", LoggerSpec))

    def all_info(self) -> list[PluginInfo]:
        """Every registered plugin, sorted by kind then name."""
        return [
            reg.info(name)
            for reg in (self.datasets, self.loggers, self.models, self.regularizers)
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

    plugins = Plugins(
        models=Registry("model", ModelSpec),
        regularizers=Registry("regularizer", RegularizerSpec),
        datasets=Registry("dataset", DatasetSpec),
        failures=failures,
        loggers=Registry("logger", LoggerSpec),
    )
    _register(pm, "probseg_bench_register_models", plugins.models, providers, failures)
    _register(pm, "probseg_bench_register_regularizers", plugins.regularizers, providers, failures)
    _register(pm, "probseg_bench_register_datasets", plugins.datasets, providers, failures)
    _register(pm, "probseg_bench_register_loggers", plugins.loggers, providers, failures)
    return plugins


def _register(
    pm: pluggy.PluginManager,
    hook_name: str,
    registry: Registry[SpecT],
    providers: dict[str, tuple[str, str]],
    failures: list[PluginFailure],
) -> None:
    """Call every implementation of ``hook_name`` with ``registry``, in registration order, attributing what it
    adds to its provider; a hook that raises is recorded in ``failures`` (a name collision is raised). Then give
    the registry the failures that may concern its kind (a lookup of an unknown name names them): the entry
    points that did not import (``failures`` holds them all by now) and its own hooks that raised."""
    for impl in reversed(getattr(pm.hook, hook_name).get_hookimpls()):  # registration order
        registry.set_provider(*providers[impl.plugin_name])
        try:
            impl.function(registry=registry)
        except PluginCollisionError:
            raise
        except Exception as exc:
            failures.append(
                PluginFailure(providers[impl.plugin_name][1], providers[impl.plugin_name][0],
                              f"{hook_name} failed: {type(exc).__name__}: {exc}", registry.kind)
            )
    registry.failures = [f for f in failures if f.kind in (None, registry.kind)]


@lru_cache(maxsize=1)
def get_plugins() -> Plugins:
    """The process-wide plugin set (loaded once; :func:`reset_plugins` forgets it, e.g. in tests)."""
    return load_plugins()


def reset_plugins() -> None:
    """Forget the cached plugin set so the next :func:`get_plugins` rediscovers entry points."""
    get_plugins.cache_clear()
