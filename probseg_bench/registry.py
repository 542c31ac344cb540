"""The plugin registry: :class:`Registry` (one per plugin kind, generic in its spec type), where a registered
plugin came from (:class:`PluginInfo`) and a plugin entry point that failed to load (:class:`PluginFailure`).

A plugin sees only :class:`Registry` (the argument of its registration hook, re-exported by
:mod:`probseg_bench.api`); the rest is for the plugin manager (:mod:`probseg_bench.plugins`) and ``list``.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Generic, TypeVar

from probseg_bench.errors import PluginCollisionError, ProbsegError, did_you_mean

if TYPE_CHECKING:  # pragma: no cover
    from probseg_bench.api import DatasetSpec, LoggerSpec, ModelSpec, RegularizerSpec

SpecT = TypeVar("SpecT", bound="ModelSpec | RegularizerSpec | DatasetSpec | LoggerSpec")
"""The spec type of a registry: :class:`~probseg_bench.api.ModelSpec`,
:class:`~probseg_bench.api.RegularizerSpec`, :class:`~probseg_bench.api.DatasetSpec` or
:class:`~probseg_bench.api.LoggerSpec` (training-curve loggers)."""


@dataclass(frozen=True)
class PluginInfo:
    """Where a registered plugin came from (for ``probseg-bench list`` and collision errors)."""

    kind: str  # "model" | "regularizer" | "dataset" | "logger"
    name: str
    description: str
    distribution: str  # the distribution that provides it, e.g. "probseg-bench 0.1.0"
    entry_point: str  # the entry point it was loaded through


_GENERIC_TOKENS = frozenset({"probseg", "bench", "plugin", "plugins", "model", "models", "dataset", "datasets",
                             "regularizer", "regularizers", "logger", "loggers", "py", "python"})


def _tokens(text: str) -> set[str]:
    return {t for t in re.split(r"[^a-z0-9]+", text.lower()) if len(t) > 1 and t not in _GENERIC_TOKENS}


@dataclass(frozen=True)
class PluginFailure:
    """A plugin entry point that could not be loaded, or whose registration hook raised.

    ``entry_point``: ``"name = module"``; ``distribution``: ``"name version"``; ``error``: ``"Type: message"``;
    ``kind``: the registry whose hook raised, or None when the module failed to import (it may have provided
    plugins of any kind).
    """

    entry_point: str
    distribution: str
    error: str
    kind: str | None = None

    def plausibly_provides(self, name: str) -> bool:
        """Whether the unknown plugin ``name`` plausibly came from this entry point: its name, module or
        distribution equals, contains or resembles ``name``, or they share a distinctive word (``my-model`` and
        ``my_models.plugin``; not ``probseg``, ``plugin``, ``model``, ...)."""
        ep_name, _, ep_value = self.entry_point.partition("=")
        module = ep_value.split(":")[0].strip()
        candidates = [ep_name.strip(), module, *module.split("."), self.distribution.rsplit(" ", 1)[0]]

        def squash(text: str) -> str:
            return re.sub(r"[^a-z0-9]", "", text.lower())

        wanted = squash(name)
        if not wanted:
            return False
        for candidate in map(squash, candidates):
            if candidate in _GENERIC_TOKENS:
                continue
            if len(candidate) > 2 and (candidate in wanted or wanted in candidate):
                return True
            if candidate and difflib.SequenceMatcher(None, wanted, candidate).ratio() >= 0.75:
                return True
        return bool(_tokens(name) & set().union(*(_tokens(c) for c in candidates)))

    def describe(self) -> str:
        """One line: ``plugin entry point `NAME = MODULE` (DIST VERSION) failed to load: ERROR``."""
        return (f"plugin entry point `{self.entry_point}` ({self.distribution}) failed to load: "
                f"{' '.join(self.error.split())}")


class Registry(Generic[SpecT]):
    """The registry of one plugin kind, passed into its registration hook: ``registry.add(spec)``.

    ``Registry[ModelSpec]``, ``Registry[RegularizerSpec]``, ``Registry[DatasetSpec]`` and ``Registry[LoggerSpec]``
    (the hook specs in :mod:`probseg_bench.hookspecs` say which hook gets which); :meth:`get` returns the spec
    type. Adding a spec of another type, or a name twice, raises :class:`ProbsegError` naming the provider(s).
    ``failures``: the plugin entry points that failed to load and may have provided plugins of this kind (set by
    the plugin manager); a lookup of an unknown name names them.
    """

    def __init__(self, kind: str, spec_type: type[SpecT]) -> None:
        self.kind = kind
        self.spec_type = spec_type
        self._items: dict[str, SpecT] = {}
        self._info: dict[str, PluginInfo] = {}
        self._provider: tuple[str, str] = ("unknown", "unknown")
        self.failures: list[PluginFailure] = []

    def set_provider(self, distribution: str, entry_point: str) -> None:
        """Attribute the specs added next to ``distribution`` (loaded through ``entry_point``)."""
        self._provider = (distribution, entry_point)

    def add(self, spec: SpecT) -> None:
        """Register ``spec`` (the spec type of this registry's kind; checked, since a plugin may be untyped)."""
        if not isinstance(spec, self.spec_type):
            raise ProbsegError(
                f"{self._provider[0]}: registry of {self.kind}s expects a {self.spec_type.__name__}, "
                f"got {type(spec).__name__}"
            )
        if spec.name in self._items:
            first = self._info[spec.name].distribution
            raise PluginCollisionError(
                f"{self.kind} plugin name '{spec.name}' is registered twice: by {first} and by "
                f"{self._provider[0]}; uninstall one of them"
            )
        self._items[spec.name] = spec
        self._info[spec.name] = PluginInfo(self.kind, spec.name, spec.description, *self._provider)

    def names(self) -> list[str]:
        """The registered names, sorted."""
        return sorted(self._items)

    def get(self, name: str) -> SpecT:
        """The spec registered as ``name``.

        Raises:
            ProbsegError: unknown name; the message lists the known names and the closest one, and names the
                plugin entry points that failed to load (with their errors when one plausibly provides ``name``).
        """
        if name not in self._items:
            known = ", ".join(self.names()) or "none"
            hint = did_you_mean(name, self._items)
            raise ProbsegError(f"unknown {self.kind} '{name}'{hint}; known {self.kind}s: {known}"
                               f"{self.failure_note(name)}")
        return self._items[name]

    def failure_note(self, name: str) -> str:
        """See :func:`failure_note` (with this registry's failures)."""
        return failure_note(name, self.failures)

    def info(self, name: str) -> PluginInfo:
        """Where the plugin registered as ``name`` came from."""
        return self._info[name]


def failure_note(name: str, failures: Sequence[PluginFailure]) -> str:
    """``"; note: ..."`` for an unknown plugin ``name``: the failed entry points that plausibly provide it, with
    why they failed, else the failed ones by name only; ``""`` when none failed."""
    matching = [f for f in failures if f.plausibly_provides(name)]
    if matching:
        return "".join(f"; note: {f.describe()}" for f in matching)
    if not failures:
        return ""
    listed = ", ".join(f"`{f.entry_point}` ({f.distribution})" for f in failures)
    return f"; note: plugin entry points that failed to load (`probseg-bench list` shows why): {listed}"
