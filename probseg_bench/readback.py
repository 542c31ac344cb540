"""Reading back the torch files the suite wrote itself (a fold's training state ``fold<k>.partial.pt``, a best
checkpoint ``fold<k>.pt``) without trusting them.

A file on disk can be damaged (a full disk, a copy cut short, random bytes) or replaced. It is read with
``weights_only=True`` (no code in it runs), and any failure becomes ONE line naming the file, saying it is damaged
and what to do; torch's own message is never shown, since it suggests ``weights_only=False``, which would run code
from a file the suite cannot trust (DESIGN.md section 6).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from probseg_bench.errors import ProbsegError


def damaged(path: Path | str, what: str, remedy: str) -> ProbsegError:
    """The one-line error for a damaged file: ``"<path>: the <what> is damaged (...); <remedy>"``."""
    return ProbsegError(f"{path}: the {what} is damaged (not readable as a weights-only torch file of "
                        f"probseg-bench); {remedy}")


def load_torch_file(path: Path | str, what: str, remedy: str, required: Sequence[str] = ()) -> dict[str, Any]:
    """Read a dict written by :func:`probseg_bench.atomic.atomic_torch_save` from ``path``, on the CPU, with
    ``weights_only=True`` (tensors, numbers, strings, lists and dicts only; nothing is executed).

    Args:
        path: the file.
        what: what the file is, for the message (e.g. ``"saved training state"``).
        remedy: what the user can do about a damaged file (e.g. ``"delete it to restart the fold"``).
        required: keys the dict must hold (a file missing one is damaged).

    Returns:
        The stored dict.

    Raises:
        ProbsegError: one line: the file cannot be read (an operating-system error, named), or it is damaged
            (not a weights-only torch file, not a dict, or a required key missing), with ``remedy``.
    """
    import torch

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except OSError as exc:
        raise ProbsegError(f"{path}: cannot read the {what} ({exc.strerror or type(exc).__name__})") from None
    except Exception:  # UnpicklingError, EOFError, RuntimeError (zip), ...: its message is torch's, not shown
        raise damaged(path, what, remedy) from None
    if not isinstance(state, dict) or any(k not in state for k in required):
        raise damaged(path, what, remedy)
    return state


__all__: Sequence[str] = ["damaged", "load_torch_file"]


def read_toml(path: Path | str, what: str = "") -> dict[str, Any]:
    """A TOML file (a grid, tune's parameters) as a dict, read as UTF-8 whatever the locale.

    Raises:
        ProbsegError: one line naming the file: unreadable (``cannot read [what] (reason)``), not UTF-8 (the byte
            offset), or not valid TOML (tomllib's message).
    """
    import tomllib

    try:
        return tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise ProbsegError(f"{path}: cannot read {what + ' ' if what else ''}({exc.strerror})") from None
    except UnicodeDecodeError as exc:
        raise ProbsegError(f"{path}: not UTF-8 text at byte {exc.start} (a TOML file is UTF-8)") from None
    except tomllib.TOMLDecodeError as exc:
        raise ProbsegError(f"{path}: not valid TOML ({exc})") from None
