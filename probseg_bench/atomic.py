"""Atomic file writes: the content goes to a temporary file in the target's folder, then replaces the target in
one rename, so a reader (or a process killed mid-write) never sees half a file."""

from __future__ import annotations

import io
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path


def atomic_write(path: Path, write: Callable[[Path], object]) -> Path:
    """Create ``path``'s folder, call ``write(tmp)`` on a temporary file beside ``path``, then rename it to
    ``path``; the temporary file is removed if ``write`` raises (or the process is interrupted in Python), and an
    existing ``path`` is then left as it was.

    Returns:
        ``path``.

    Raises:
        OutputError: the folder cannot be created or the file cannot be written (no space left, no permission, a
            file size limit): one line naming ``path``.
    """
    from probseg_bench.outputs import write_error

    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        raise write_error(path, exc) from None
    os.close(fd)
    tmp = Path(name)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp's file is private (0600); give it a new file's mode
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise write_error(path, exc) from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def atomic_torch_save(obj: object, path: Path) -> Path:
    """``torch.save(obj)`` to ``path`` atomically (see :func:`atomic_write`). The object is serialised in memory
    first and written with plain file writes, so that a failed write is the operating system's error (torch's own
    writer reports it as an opaque ``RuntimeError``)."""
    import torch

    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return atomic_write(path, lambda tmp: tmp.write_bytes(buffer.getbuffer()))


def atomic_write_text(path: Path, text: str) -> Path:
    """``path.write_text(text)`` in UTF-8 (whatever the locale's encoding) atomically (see :func:`atomic_write`)."""
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


@contextmanager
def atomic_folder(path: Path) -> Iterator[Path]:
    """Write a folder atomically: the block writes into a new temporary folder beside ``path`` (yielded); when
    it ends without error the temporary folder takes ``path``'s place (a folder already there, e.g. an earlier
    analysis, is replaced: moved aside, then removed), else it is removed and ``path`` is left as it was.

    Raises:
        OutputError: the folder cannot be created or written in (one line naming ``path``), including an
            :class:`OSError` of a write inside the block.
    """
    from probseg_bench.outputs import write_error

    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    except OSError as exc:
        raise write_error(path, exc) from None
    try:
        yield tmp
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp's folder is private (0700); give it a new folder's mode
        _replace_folder(tmp, path)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        inside = exc.filename is None or str(exc.filename).startswith(str(tmp))
        if not inside:  # not a write of this folder (e.g. reading an input): the caller's error
            raise
        raise write_error(path, exc) from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _umask() -> int:
    """This process's umask (read by setting it and back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _replace_folder(new: Path, path: Path) -> None:
    """Rename the folder ``new`` to ``path``; a folder already at ``path`` is moved aside first and removed after
    (put back if the rename fails)."""
    if not (path.is_dir() and not path.is_symlink()):
        os.replace(new, path)
        return
    aside = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".old", dir=path.parent))
    os.replace(path, aside / path.name)
    try:
        os.replace(new, path)
    except BaseException:
        os.replace(aside / path.name, path)
        aside.rmdir()
        raise
    shutil.rmtree(aside, ignore_errors=True)
