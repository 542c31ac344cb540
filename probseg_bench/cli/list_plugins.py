"""``probseg-bench list``: every plugin with its kind, description and providing distribution; ``--details`` or
``list NAME``: the hyperparameters of models and regularizers and the parameters of datasets (default, range or
choices, log scale, tunable, description); ``--format json``: all of it."""

from __future__ import annotations

import json
from typing import Any

import typer
from rich.table import Table

from probseg_bench.api import DatasetSpec, HyperParameter, HyperValue, LoggerSpec, ModelSpec, RegularizerSpec
from probseg_bench.cli._app import app, console, err_console
from probseg_bench.cli.options import DEFAULT_FORMAT, TableOrJson
from probseg_bench.errors import ProbsegError, did_you_mean
from probseg_bench.plugins import Plugins, get_plugins
from probseg_bench.registry import PluginInfo, failure_note


def _value(v: HyperValue | None) -> str:
    if v is None:
        return ""
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, float):
        return f"{v:g}"
    return str(v)


def _range(hp: HyperParameter) -> str:
    if hp.choices is not None:
        return " | ".join(_value(c) for c in hp.choices)
    if hp.low is None and hp.high is None:
        return ""
    return f"{_value(hp.low) or '-inf'} .. {_value(hp.high) or 'inf'}"


def hyperparameter_json(hp: HyperParameter) -> dict[str, Any]:
    """One hyperparameter / dataset parameter as JSON: name, type, default, low, high, log, choices, tunable,
    description."""
    return {
        "name": hp.name, "type": type(hp.default).__name__, "default": hp.default, "low": hp.low, "high": hp.high,
        "log": hp.log, "choices": None if hp.choices is None else list(hp.choices), "tunable": hp.tunable,
        "description": hp.help,
    }


def _spec(plugins: Plugins, info: PluginInfo) -> ModelSpec | RegularizerSpec | DatasetSpec | LoggerSpec:
    if info.kind == "model":
        return plugins.models.get(info.name)
    if info.kind == "regularizer":
        return plugins.regularizers.get(info.name)
    if info.kind == "logger":
        return plugins.loggers.get(info.name)
    return plugins.datasets.get(info.name)


def _parameters(spec: Any) -> tuple[HyperParameter, ...]:
    if isinstance(spec, LoggerSpec):  # a training-curve logger (--log NAME) has no parameters
        return ()
    return tuple(spec.parameters) if isinstance(spec, DatasetSpec) else tuple(spec.hyperparameters)


def plugin_json(plugins: Plugins, info: PluginInfo) -> dict[str, Any]:
    """A plugin as JSON: its :class:`PluginInfo` fields, its (hyper)parameters and the rest of its spec."""
    spec = _spec(plugins, info)
    out: dict[str, Any] = dict(info.__dict__)
    out["citation"] = spec.citation
    if isinstance(spec, DatasetSpec):
        out["parameters"] = [hyperparameter_json(hp) for hp in spec.parameters]
        out.update(license=spec.license, layout=spec.layout, known_distribution=spec.known_distribution is not None,
                   protocol=dict(spec.protocol.__dict__))
        return out
    if isinstance(spec, LoggerSpec):
        return out
    out["hyperparameters"] = [hyperparameter_json(hp) for hp in spec.hyperparameters]
    if isinstance(spec, ModelSpec):
        out["default_latent_dim"] = spec.default_latent_dim
        out["objective"] = [dict(t.__dict__) for t in spec.objective]
        out["grad_clip"] = spec.grad_clip
    return out


def _objective(spec: ModelSpec) -> str:
    terms = [f"{t.weight} * {t.regularizer}{' (swappable: --regularizer)' if t.swappable else ''}"
             for t in spec.objective]
    return " + ".join(["reconstruction (the model's own if it returns one, else BCE)", *terms])


def _parameter_table(title: str, rows: list[tuple[PluginInfo, HyperParameter]], plugin_column: bool) -> Table:
    """One row per (hyper)parameter; the log and tunable columns only where a model or regularizer is listed
    (a dataset parameter is never searched)."""
    searched = any(info.kind != "dataset" for info, _ in rows)
    table = Table(title=title)
    if plugin_column:
        table.add_column("plugin", no_wrap=True)
    for col in ("name", "default", "range / choices"):
        table.add_column(col, no_wrap=True)
    if searched:
        table.add_column("log")
        table.add_column("tunable")
    table.add_column("description", overflow="fold", ratio=1)
    previous = None
    for info, hp in rows:
        cells = [hp.name, _value(hp.default), _range(hp)]
        if searched:
            cells += ["", ""] if info.kind == "dataset" else ["yes" if hp.log else "", "yes" if hp.tunable else "no"]
        if plugin_column:
            new_plugin = (info.kind, info.name) != previous
            if new_plugin and previous is not None:
                table.add_section()
            cells.insert(0, f"{info.kind} {info.name}" if new_plugin else "")
            previous = (info.kind, info.name)
        table.add_row(*cells, hp.help)
    return table


def _select(plugins: Plugins, name: str) -> list[PluginInfo]:
    """The plugins called ``name`` (one per kind at most).

    Raises:
        ProbsegError: none is; the message names the closest and the entry points that failed to load.
    """
    infos = [i for i in plugins.all_info() if i.name == name]
    if not infos:
        known = sorted({i.name for i in plugins.all_info()})
        raise ProbsegError(f"no plugin named '{name}'{did_you_mean(name, known)}; `probseg-bench list` shows them "
                           f"all{failure_note(name, plugins.failures)}")
    return infos


def _print_details(plugins: Plugins, info: PluginInfo) -> None:
    spec = _spec(plugins, info)
    console.print(f"{info.kind} {info.name}: {info.description}", markup=False, highlight=False)
    lines = [f"provided by: {info.distribution} (entry point `{info.entry_point}`)"]
    if isinstance(spec, ModelSpec):
        lines.append(f"objective: {_objective(spec)}")
        lines.append(f"latent dim when -d is not given: {spec.default_latent_dim}"
                     + (" (its reference code's)" if spec.latent_dim is not None else ""))
        regs = [t.regularizer for t in spec.objective if t.regularizer in plugins.regularizers.names()
                and plugins.regularizers.get(t.regularizer).hyperparameters]
        if regs:
            lines.append(f"its regularizers' hyperparameters are set with --hp too: probseg-bench list "
                         f"{' / '.join(regs)}")
    if isinstance(spec, DatasetSpec):
        p = spec.protocol
        lines.append(f"paper protocol: {p.epochs} epochs, {p.warmup_epochs} warm-up; region of interest: "
                     f"{f'{p.roi_size} x {p.roi_size}' if p.roi_size else 'the whole image'}")
        lines.append(f"licence: {spec.license or 'not stated'}")
        if spec.known_distribution is not None:
            lines.append("known true distribution over masks: yes (probseg-bench validate)")
        if spec.layout:
            lines.append(f"layout: {spec.layout}")
    if spec.citation:
        lines.append(f"citation: {spec.citation}")
    for line in lines:
        console.print(f"  {line}", markup=False, highlight=False)
    if isinstance(spec, LoggerSpec):
        console.print(f"  training curves: --log {info.name}", markup=False, highlight=False)
        return
    params = _parameters(spec)
    what = "parameters (--dataset-param NAME=VALUE)" if isinstance(spec, DatasetSpec) else \
        "hyperparameters (--hp NAME=VALUE)"
    if params:
        console.print(_parameter_table(f"{info.name}: {what}", [(info, hp) for hp in params], plugin_column=False))
    else:
        console.print(f"  {what}: none", markup=False, highlight=False)


@app.command("list")
def list_plugins(
    name: str | None = typer.Argument(
        None, show_default=False,
        help="Show this plugin only, with its hyperparameters (or dataset parameters), objective and citation."),
    details: bool = typer.Option(
        False, "--details",
        help="Also show every plugin's hyperparameters (models, regularizers) and parameters (datasets)."),
    fmt: TableOrJson = DEFAULT_FORMAT,
) -> None:
    """List the registered dataset, model, regularizer and training-curve logger plugins (and plugins that failed
    to load)."""
    if fmt not in ("table", "json"):
        raise ProbsegError(f"--format: expected table or json, got {fmt!r}")
    plugins = get_plugins()
    infos = plugins.all_info() if name is None else _select(plugins, name)
    if fmt == "json":
        print(json.dumps({
            "plugins": [plugin_json(plugins, i) for i in infos],
            "failures": [f.__dict__ for f in plugins.failures],
        }, indent=2))
        return
    if name is not None:
        for i in infos:
            _print_details(plugins, i)
        return
    table = Table(title="probseg-bench plugins")
    for col in ("kind", "name", "description", "provided by"):
        table.add_column(col, overflow="fold")
    for i in infos:
        table.add_row(i.kind, i.name, i.description, i.distribution)
    console.print(table)
    if details:
        rows = [(i, hp) for i in infos for hp in _parameters(_spec(plugins, i))]
        console.print(_parameter_table("hyperparameters (--hp) and dataset parameters (--dataset-param)", rows,
                                       plugin_column=True))
    else:
        console.print("hyperparameters and dataset parameters: probseg-bench list --details, or list NAME",
                      markup=False, highlight=False)
    for f in plugins.failures:
        err_console.print(f"plugin {f.entry_point} ({f.distribution}) failed to load: {f.error}",
                          markup=False, highlight=False)
