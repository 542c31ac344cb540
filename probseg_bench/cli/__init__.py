"""The ``probseg-bench`` command line (Typer; one module per command). The CLI parses, calls the core and
renders; a :class:`ProbsegError` becomes one line on stderr and exit status 2; any other exception (a library's
error, an operating-system error, running out of memory) one line with its type and message and exit status 1,
its traceback only with ``probseg-bench --debug ...`` or ``PROBSEG_DEBUG=1``."""

from __future__ import annotations

import os
import sys
import traceback

import typer

from probseg_bench.cli import analyze as _analyze  # noqa: F401  (registers the command)
from probseg_bench.cli import compare as _compare  # noqa: F401
from probseg_bench.cli import data as _data  # noqa: F401  (registers the command group)
from probseg_bench.cli import leaderboard as _leaderboard  # noqa: F401  (registers the command)
from probseg_bench.cli import list_plugins as _list  # noqa: F401
from probseg_bench.cli import run as _run  # noqa: F401
from probseg_bench.cli import tune as _tune  # noqa: F401
from probseg_bench.cli import validate as _validate  # noqa: F401
from probseg_bench.cli._app import app, err_console
from probseg_bench.errors import ProbsegError
from probseg_bench.terminal import use_ascii_fallbacks

DEBUG_ENV = "PROBSEG_DEBUG"
"""Set to 1 (like the global ``--debug`` option) to print the traceback of an error."""
INTERRUPTED = ("interrupted (Ctrl-C): this command wrote nothing (its reports, analysis folders and converted data are "
               "written whole, at their end, or not at all)")
"""The line of a Ctrl-C in a command that does not say itself what it left (analyze, data, compare, leaderboard)."""
MAX_MESSAGE = 400
"""Characters of an unexpected exception's message shown on its one line."""


@app.callback()
def _global_options(
    debug: bool = typer.Option(False, "--debug", help=f"Print the traceback of an error (or set {DEBUG_ENV}=1); "
                                                      "give it before the command: probseg-bench --debug run ..."),
) -> None:
    if debug:
        os.environ[DEBUG_ENV] = "1"


def debugging() -> bool:
    """Whether tracebacks are wanted (``--debug`` or ``PROBSEG_DEBUG`` set to anything but empty or 0)."""
    return os.environ.get(DEBUG_ENV, "").strip() not in ("", "0")


def one_line(exc: BaseException) -> str:
    """``Type: message`` of an exception on one line (whitespace collapsed, at most :data:`MAX_MESSAGE`
    characters of the message)."""
    message = " ".join(str(exc).split())
    if len(message) > MAX_MESSAGE:
        message = message[: MAX_MESSAGE - 3] + "..."
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__


def _unaccounted_interrupt(exc: SystemExit) -> bool:
    """Whether ``exc`` is typer's exit 130 for a Ctrl-C that no command handled: typer raises ``Exit(130) from`` the
    KeyboardInterrupt; the commands that say what is on disk (run, validate, tune) raise ``Exit(130) from None``."""
    exit_exc = exc.__context__
    return exc.code == 130 and isinstance(getattr(exit_exc, "__cause__", None), KeyboardInterrupt)


def main() -> None:
    """Console-script entry point: exit status 2 and one line for a :class:`ProbsegError`; 1 and one line (type,
    message, how to see the traceback) for any other exception; with ``--debug`` / ``PROBSEG_DEBUG=1`` the
    traceback first; 130 and one line for a Ctrl-C that the command did not account for itself. Output works on
    any terminal encoding (:func:`probseg_bench.terminal.use_ascii_fallbacks`)."""
    use_ascii_fallbacks(sys.stdout, sys.stderr)
    try:
        app()
    except ProbsegError as exc:
        if debugging():
            traceback.print_exc()
        err_console.print(f"error: {exc}", markup=False, highlight=False, soft_wrap=True)
        sys.exit(2)
    except SystemExit as exc:
        if _unaccounted_interrupt(exc):  # typer turned a Ctrl-C into a silent exit 130
            err_console.print(INTERRUPTED, markup=False, highlight=False, soft_wrap=True)
        raise
    except KeyboardInterrupt:  # outside typer's own handling (e.g. while it parses)
        err_console.print(INTERRUPTED, markup=False, highlight=False, soft_wrap=True)
        sys.exit(130)
    except Exception as exc:  # the last line of defence: a library's or the system's error, not a traceback
        if debugging():
            traceback.print_exc()
            hint = "an unexpected error (traceback above)"
        else:
            hint = f"an unexpected error; rerun with probseg-bench --debug ... (or {DEBUG_ENV}=1) for the traceback"
        err_console.print(f"error: {one_line(exc)} ({hint})", markup=False, highlight=False, soft_wrap=True)
        sys.exit(1)


__all__ = ["DEBUG_ENV", "INTERRUPTED", "app", "debugging", "main", "one_line"]
