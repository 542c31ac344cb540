"""Output locations: every folder or file a command will write (run dir, results store file, analysis and
validation folders, TOML outputs, converted datasets) is checked before any work, so that a path that cannot be
written fails in one line at once instead of after the training; a write that fails later becomes one line
naming the path (:func:`write_error`)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from probseg_bench.errors import OutputError, ProbsegError


def _deepest_existing(path: Path) -> Path:
    """``path`` or its closest existing ancestor (``Path('.')`` for a relative path none of whose parts exist)."""
    current = path
    while not (current.exists() or current.is_symlink()):
        if current.parent == current:
            break
        current = current.parent
    return current


def _probe(folder: Path, label: str) -> None:
    """Create and remove a temporary file in ``folder`` (what a write there needs: also catches a read-only file
    system, which permission bits do not show).

    Raises:
        ProbsegError: it cannot be created.
    """
    try:
        fd, name = tempfile.mkstemp(dir=folder, prefix=".probseg-write-check.")
    except OSError as exc:
        raise ProbsegError(f"{label}: cannot write in {folder} ({exc.strerror or exc})") from None
    os.close(fd)
    Path(name).unlink(missing_ok=True)


def check_output_folder(path: Path, option: str) -> Path:
    """Check, creating nothing, that the folder ``path`` is (or can be created as) a folder this process can write
    in: every part of it that exists is a folder, and the deepest existing one is writable.

    Args:
        option: the option or setting that names it, for the message (e.g. ``"--run-dir"``).

    Returns:
        ``path``.

    Raises:
        ProbsegError: a part of ``path`` is a file, or the deepest existing folder cannot be written in (one line
            naming the option, the path and the reason).
    """
    return _check_folder(Path(path), f"{option} {path}", Path(path))


def _check_folder(folder: Path, label: str, named: Path) -> Path:
    """:func:`check_output_folder` of ``folder`` for the output ``named`` (the folder, or a file in it), messages
    prefixed with ``label``."""
    existing = _deepest_existing(folder)
    if existing.exists() and not existing.is_dir():
        where = "it" if existing == named else str(existing)
        raise ProbsegError(f"{label}: {where} is a file, not a folder; choose another path")
    if not existing.exists():  # a dangling symbolic link
        raise ProbsegError(f"{label}: {existing} is a broken link")
    _probe(existing, label)
    return folder


def check_output_file(path: Path, option: str) -> Path:
    """Check, creating nothing, that the file ``path`` can be written: its folder passes
    :func:`check_output_folder`, and ``path`` is not a folder (nor a file this process may not write).

    Returns:
        ``path``.

    Raises:
        ProbsegError: one line naming the option, the path and the reason.
    """
    path = Path(path)
    if path.is_dir():
        raise ProbsegError(f"{option} {path}: it is a folder, not a file; choose a file path")
    _check_folder(path.parent, f"{option} {path}", path)
    if path.exists() and not os.access(path, os.W_OK):
        raise ProbsegError(f"{option} {path}: the file is not writable")
    return path


def check_storage(storage: str, option: str = "--storage") -> None:
    """For a SQLite results store (a file path or ``sqlite:///FILE``), :func:`check_output_file` on the file, the
    store created nowhere; other URLs (a database server) are checked when connecting.

    Raises:
        ProbsegError: the file cannot be created or written (one line naming ``option`` and the file).
    """
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        url = make_url(storage if "://" in storage else f"sqlite:///{storage}")
    except ArgumentError:
        return  # ResultsStore names an unusable URL
    if url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:"):
        assert url.database is not None
        check_output_file(Path(url.database), option)


def write_error(path: Path, exc: OSError) -> OutputError:
    """The one-line error of a write to ``path`` that failed with ``exc`` (no space, permission, file size limit)."""
    reason = exc.strerror or str(exc) or type(exc).__name__
    return OutputError(f"{path}: cannot write ({reason}); nothing half-written was left there")


__all__ = ["check_output_file", "check_output_folder", "check_storage", "write_error"]
