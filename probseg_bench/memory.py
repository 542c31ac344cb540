"""What this machine's memory can hold: a size the user asks for (a dataset parameter, a sample count) is compared
with it before anything is allocated, so that a request that cannot fit is one line naming the setting instead
of numpy's ``_ArrayMemoryError`` (or the kernel's OOM killer) after minutes of work."""

from __future__ import annotations

import os
from pathlib import Path

from probseg_bench.errors import ProbsegError

_CGROUP_LIMITS = (Path("/sys/fs/cgroup/memory.max"), Path("/sys/fs/cgroup/memory/memory.limit_in_bytes"))


def memory_limit() -> int | None:
    """The bytes of memory this process can use at most: the machine's physical memory, or the container's
    (cgroup v2 ``memory.max`` / v1 ``memory.limit_in_bytes``) limit when lower; None where neither is known
    (then nothing is refused)."""
    limits = []
    try:
        limits.append(os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (AttributeError, OSError, ValueError):  # not a POSIX system
        pass
    for path in _CGROUP_LIMITS:
        try:
            text = path.read_text().strip()
        except OSError:
            continue
        if text.isdigit() and 0 < int(text) < 2**60:  # "max" or a huge number: no limit
            limits.append(int(text))
    positive = [n for n in limits if n > 0]
    return min(positive) if positive else None


def format_bytes(n: float) -> str:
    """``1.49 TiB``, ``11.9 GiB``, ``512 B``: binary units, three significant digits."""
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.3g} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def check_fits(nbytes: float, what: str, limit: int | None = None) -> None:
    """Refuse, before allocating, ``nbytes`` that cannot fit in this machine's memory.

    Args:
        nbytes: the size of what is about to be allocated, in bytes.
        what: the setting that asks for it, for the message (e.g. ``"--dataset-param n_images=100000000"``).
        limit: the bound in bytes (default: :func:`memory_limit`).

    Raises:
        ProbsegError: ``nbytes`` exceeds the bound (the message names ``what``, the size and the bound).
    """
    bound = memory_limit() if limit is None else limit
    if bound is not None and nbytes > bound:
        raise ProbsegError(f"{what}: needs {format_bytes(nbytes)} of memory, more than this machine's "
                           f"{format_bytes(bound)}; choose a smaller value")


__all__ = ["check_fits", "format_bytes", "memory_limit"]
