"""``--help`` of every command: help strings are printed verbatim (a "[default: ...]" in a help text is not eaten
as markup), flags show no value type, and the command list gives each command a readable summary."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
import typer

from probseg_bench.cli import app
from probseg_bench.cli._app import STORAGE_HELP
from probseg_bench.results import DEFAULT_STORAGE

WIDTH = "100"


def _walk(command: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Any]]:
    """Every command of the built CLI (the root, the registered commands, each group's subcommands), depth first."""
    yield path, command
    for name, sub in getattr(command, "commands", {}).items():
        yield from _walk(sub, (*path, name))


COMMANDS = list(_walk(typer.main.get_command(app)))


def _squash(text: str) -> str:
    """Without any whitespace: help text is wrapped to the width, anywhere between words (or after a hyphen)."""
    return "".join(text.split())


def test_every_registered_command_is_walked():
    names = {path for path, _ in COMMANDS}
    assert {(c.name or c.callback.__name__,) for c in app.registered_commands} <= names  # type: ignore[union-attr]
    for group in app.registered_groups:
        assert (group.name,) in names and len([p for p in names if p[:1] == (group.name,)]) > 1
    assert ("data", "inspect") in names and ("run",) in names


@pytest.mark.parametrize("path", [p for p, _ in COMMANDS], ids=lambda p: " ".join(p) or "probseg-bench")
def test_help_shows_bracketed_defaults_and_no_bool_type_for_flags(monkeypatch, run_main, path):
    command = dict(COMMANDS)[path]
    monkeypatch.setenv("COLUMNS", WIDTH)
    code, out, err = run_main(*path, "--help")
    assert code == 0, err
    flat = _squash(out)
    for param in command.params:
        for bracketed in re.findall(r"\[default[^\]]*\]", getattr(param, "help", None) or ""):
            assert _squash(bracketed) in flat, f"{' '.join(path)} {param.opts}: {bracketed!r} missing from\n{out}"
    flags = [p for p in command.params if getattr(p, "is_flag", False)]
    for opt in ["--help", *(o for p in flags for o in p.opts)]:
        assert re.search(rf"{re.escape(opt)}\b[ ,\-\w]*<bool>", out) is None, f"{opt} shows <bool>:\n{out}"
    assert "<bool>" not in out


@pytest.mark.parametrize(("path", "expected"), [
    (("run",), "Only these folds: CV folds, or training runs of a fixed-split preset (lidc-v1, lidc-v2) (repeatable) "
               "[default: all]."),
    (("run",), "With --executor ray: the cluster [default: new]."),
    (("analyze",), "Latent dim (needed when the store holds several for the model)."),
    (("analyze",), "Fold (default: the configuration's lowest stored fold)."),
    (("run",), "Protocol preset: paper, quick, lidc-v1, lidc-v2 (default: paper; run --params FILE: the file's)."),
    (("tune",), "Protocol preset: paper, quick, lidc-v1, lidc-v2 (default: paper; run --params FILE: the file's)."),
    (("validate",), "Protocol preset: paper, quick, lidc-v1, lidc-v2 [default: quick, not run's paper: the models "
                    "are compared with the truth and each other, in minutes]."),
    (("analyze",), "Samples per image [default: the run's, 16]."),
    (("tune",), "Study name [default: MODEL-DATASET-OBJECTIVE]."),
    (("tune",), "TOML for the best parameters [default: STUDY.toml]."),
    (("compare",), "Only these latent dimensions (repeatable) [default: all]."),
    (("leaderboard",), STORAGE_HELP),
])
def test_known_defaults_in_help(monkeypatch, run_main, path, expected):
    monkeypatch.setenv("COLUMNS", WIDTH)
    _, out, _ = run_main(*path, "--help")
    assert _squash(expected) in _squash(out)


def test_storage_help_names_the_default_store():
    assert f"[default: {DEFAULT_STORAGE}]" in STORAGE_HELP


def test_flags_are_listed_without_a_value(monkeypatch, run_main):
    monkeypatch.setenv("COLUMNS", WIDTH)
    _, out, _ = run_main("run", "--help")
    pivot = next(line for line in out.splitlines() if "--pivot " in line)
    assert pivot.split("--pivot", 1)[1].split()[0] == "The"  # the help text follows the flag directly


def test_the_command_list_summarises_every_command(monkeypatch, run_main):
    """The root help lists each command with the start of its help (not cut at an abbreviation like "Fig.")."""
    monkeypatch.setenv("COLUMNS", WIDTH)
    _, out, _ = run_main("--help")
    for path, command in COMMANDS:
        if len(path) == 1:
            summary = command.get_short_help_str(80)
            assert len(summary.split()) >= 4, f"{path[0]}: {summary!r}"
            assert _squash(summary.removesuffix("...")[:30]) in _squash(out)
