"""Hyperparameter declaration and coercion: :class:`HyperParameter` (a model's, regularizer's or dataset's
declared setting with its default and search range), :data:`HyperValue` and :func:`resolve_hyperparameters`.

Part of the plugin contract: a plugin imports these names from :mod:`probseg_bench.api`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from probseg_bench.errors import ProbsegError, did_you_mean

HyperValue = float | int | str | bool
"""The value of a hyperparameter or dataset parameter."""


@dataclass(frozen=True)
class HyperParameter:
    """One hyperparameter of a model or regularizer plugin: its default and its search range.

    ``low``/``high`` bound a numeric search (``log=True`` for a log-uniform search); ``choices`` lists the values
    of a categorical one. ``tunable=False`` marks a setting that a search leaves alone (e.g. a gradient clip).
    ``minimum``/``maximum`` (inclusive, optional) bound the values the setting accepts at all (a size >= 1), which
    :meth:`coerce` enforces; the search range may be narrower (``low``/``high`` only bound a search).
    """

    name: str
    default: HyperValue
    help: str = ""
    low: float | None = None
    high: float | None = None
    log: bool = False
    choices: tuple[HyperValue, ...] | None = None
    tunable: bool = True
    minimum: float | None = None
    maximum: float | None = None

    def coerce(self, value: Any, noun: str = "hyperparameter") -> HyperValue:
        """Convert ``value`` (e.g. a CLI string) to the type of the default; errors call it a ``noun`` (a dataset
        plugin's parameters are ``HyperParameter`` too, named "dataset parameter" in its messages).

        Raises:
            ProbsegError: when the value cannot be converted, lies outside ``choices``, or outside
                ``minimum``..``maximum``.
        """
        kind = type(self.default)
        try:
            if kind is bool and isinstance(value, str):
                if value.lower() not in {"true", "false", "1", "0", "yes", "no"}:
                    raise ValueError(value)
                out: HyperValue = value.lower() in {"true", "1", "yes"}
            elif kind is bool:
                # a file's true/false, or 0/1; no other number is silently a bool
                if isinstance(value, bool) or (isinstance(value, int) and value in (0, 1)):
                    out = bool(value)
                else:
                    raise ValueError(value)
            elif isinstance(value, bool) and kind is not str:
                raise ValueError(value)  # TOML's true is not the number 1
            elif kind is int and isinstance(value, float):
                if not value.is_integer():
                    raise ValueError(value)  # 2.7 is not silently 2
                out = int(value)
            else:
                out = kind(value)
        except (TypeError, ValueError, OverflowError):
            raise ProbsegError(
                f"{noun} '{self.name}': expected {'an' if kind.__name__[0] in 'aeiou' else 'a'} "
                f"{kind.__name__}, got {value!r}"
            ) from None
        if isinstance(out, float) and not np.isfinite(out):
            raise ProbsegError(f"{noun} '{self.name}': expected a finite number, got {value!r}")
        if self.choices is not None and out not in self.choices:
            raise ProbsegError(f"{noun} '{self.name}': expected one of {list(self.choices)}, got {value!r}")
        self.check_bounds(out, noun)
        return out

    def check_bounds(self, value: Any, noun: str = "hyperparameter") -> None:
        """Refuse a number outside ``minimum``..``maximum`` (a non-number, or a setting without bounds, passes).

        Raises:
            ProbsegError: one line naming the setting, the bound and the value.
        """
        if isinstance(value, bool) or not isinstance(value, int | float):
            return
        low, high = self.minimum, self.maximum
        if (low is not None and value < low) or (high is not None and value > high):
            if high is None:
                bound = f">= {_number(low)}" if low is not None else ""
            else:
                bound = f"<= {_number(high)}" if low is None else f"in {_number(low)}..{_number(high)}"
            raise ProbsegError(f"{noun} '{self.name}': expected a value {bound}, got {value!r}")


def _number(value: float) -> str:
    """``1`` for 1.0, ``2147483647`` (not 2.15e+09), ``0.5``."""
    return str(int(value)) if float(value).is_integer() and abs(value) < 1e15 else f"{value:g}"


def resolve_hyperparameters(
    owner: str, declared: Sequence[HyperParameter], overrides: Mapping[str, Any], noun: str = "hyperparameter"
) -> dict[str, HyperValue]:
    """Defaults of ``declared`` updated with ``overrides`` (coerced to the declared types); the messages call a
    declared name a ``noun`` ("dataset parameter" for a dataset plugin's).

    Raises:
        ProbsegError: for an override that ``owner`` does not declare (with the closest declared name), or a
            value of the wrong type.
    """
    by_name = {hp.name: hp for hp in declared}
    unknown = [k for k in overrides if k not in by_name]
    if unknown:
        raise ProbsegError(
            f"{owner} has no {noun} '{unknown[0]}'{did_you_mean(unknown[0], by_name)}; "
            f"it has: {', '.join(sorted(by_name)) or 'none'}"
        )
    out = {hp.name: hp.default for hp in declared}
    out.update({k: by_name[k].coerce(v, noun) for k, v in overrides.items()})
    return out


def parse_assignments(items: Sequence[str], option: str, expected: str = "NAME=VALUE") -> dict[str, str]:
    """``["alpha=5", "beta=50"]`` -> ``{"alpha": "5", "beta": "50"}``: the NAME=VALUE items of a repeatable option
    (``--hp``, ``--dataset-param``, ``--fix``, ``--executor-option``), names and values stripped, a later name
    replacing an earlier one; the values stay text (typed later by the spec that declares the name).

    Raises:
        ProbsegError: an item without ``=`` or with an empty name (``{option} {item!r}: expected {expected}``).
    """
    out: dict[str, str] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise ProbsegError(f"{option} {item!r}: expected {expected}")
        out[name.strip()] = value.strip()
    return out
