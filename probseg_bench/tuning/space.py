"""The search space of ``tune``: the tunable hyperparameters the model and its objective's regularizers declare,
narrowed by ``--param name=low:high[:log]`` and ``--fix name=value``."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from probseg_bench.api import HyperParameter, HyperValue
from probseg_bench.errors import ProbsegError, did_you_mean
from probseg_bench.experiment import Experiment


@dataclass(frozen=True)
class SearchParameter:
    """One dimension of the search: a float / int range (``log`` for log-uniform) or categorical choices."""

    name: str
    low: float | None = None
    high: float | None = None
    log: bool = False
    choices: tuple[HyperValue, ...] | None = None
    integer: bool = False

    def suggest(self, trial: Any) -> HyperValue:
        """The trial's value of this parameter (Optuna's suggest_categorical / _int / _float)."""
        value: HyperValue
        if self.choices is not None:
            value = trial.suggest_categorical(self.name, list(self.choices))
        elif self.integer:
            assert self.low is not None and self.high is not None
            value = int(trial.suggest_int(self.name, int(self.low), int(self.high), log=self.log))
        else:
            assert self.low is not None and self.high is not None
            value = float(trial.suggest_float(self.name, float(self.low), float(self.high), log=self.log))
        return value


def parse_range(text: str) -> tuple[str, float, float, bool]:
    """``"beta=1:1000:log"`` -> ("beta", 1.0, 1000.0, True).

    Raises:
        ProbsegError: not NAME=LOW:HIGH[:log], an infinite bound (or range), LOW >= HIGH, or a non-positive bound
            of a log range.
    """
    name, sep, spec = text.partition("=")
    parts = spec.split(":")
    try:
        if not sep or not name or len(parts) not in (2, 3) or (len(parts) == 3 and parts[2] != "log"):
            raise ValueError
        low, high = float(parts[0]), float(parts[1])
    except ValueError:
        raise ProbsegError(f"--param {text!r}: expected NAME=LOW:HIGH or NAME=LOW:HIGH:log") from None
    log = len(parts) == 3
    if not (math.isfinite(low) and math.isfinite(high) and math.isfinite(high - low)):
        # Optuna's samplers need a finite range (1:inf raised OverflowError: Range exceeds valid bounds)
        raise ProbsegError(f"--param {text!r}: expected finite bounds whose difference is finite too")
    if not low < high or (log and low <= 0):
        raise ProbsegError(f"--param {text!r}: expected LOW < HIGH (and LOW > 0 for a log range)")
    return name, low, high, log


def search_space(
    experiment: Experiment, ranges: Sequence[str] = (), fixed: Mapping[str, Any] | None = None
) -> list[SearchParameter]:
    """The search parameters of the experiment's model and objective regularizers.

    Raises:
        ProbsegError: a --param or --fix name that is not tunable here, a --param range outside the setting's own
            bounds (``HyperParameter.minimum`` / ``maximum``), or an empty search space.
    """
    fixed = dict(fixed or {})
    declared: dict[str, HyperParameter] = {hp.name: hp for hp in experiment.model_spec.hyperparameters}
    for term in experiment.terms:
        for hp in experiment.plugins.regularizers.get(term.regularizer).hyperparameters:
            declared.setdefault(hp.name, hp)
    tunable = {name: hp for name, hp in declared.items()
               if hp.tunable and (hp.choices is not None or (hp.low is not None and hp.high is not None))}
    overrides = {}
    for text in ranges:
        name, low, high, log = parse_range(text)
        if name not in declared:
            raise ProbsegError(f"--param {name}: not a hyperparameter of this model or its regularizers"
                               f"{did_you_mean(name, declared)}; tunable: {', '.join(sorted(tunable))}")
        hp = declared[name]
        if hp.choices is not None or not isinstance(hp.default, int | float) or isinstance(hp.default, bool):
            what = f"one of {list(hp.choices)}" if hp.choices is not None else f"a {type(hp.default).__name__}"
            raise ProbsegError(f"--param {text!r}: '{name}' is {what}, not a number: a range does not apply "
                               f"(fix it with --fix {name}=VALUE)")
        if isinstance(hp.default, int) and not (low.is_integer() and high.is_integer()):
            raise ProbsegError(f"--param {text!r}: '{name}' is an integer: expected integer bounds")
        try:  # a range of values the setting refuses would fail every trial
            hp.check_bounds(low)
            hp.check_bounds(high)
        except ProbsegError as exc:
            raise ProbsegError(f"--param {text!r}: {exc}") from None
        overrides[name] = (low, high, log)
    for name in fixed:
        if name not in declared:
            raise ProbsegError(f"--fix {name}: not a hyperparameter of this model or its regularizers"
                               f"{did_you_mean(name, declared)}")
    space = []
    for name in sorted(set(tunable) | set(overrides)):
        if name in fixed:
            continue
        hp = declared[name]
        integer = isinstance(hp.default, int) and not isinstance(hp.default, bool)
        if name in overrides:
            low, high, log = overrides[name]
            space.append(SearchParameter(name, low, high, log, None, integer))
        else:
            space.append(SearchParameter(name, hp.low, hp.high, hp.log, hp.choices, integer))
    if not space:
        raise ProbsegError("nothing to tune: every tunable hyperparameter is fixed")
    return space
