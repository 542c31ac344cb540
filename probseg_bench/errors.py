"""The project's own error type.

Every problem a user can cause (an unknown plugin name, a bad file, a wrong shape, NaN input) is raised as a
:class:`ProbsegError` with one message that names the argument or file and what was expected. The CLI prints
that message on one line and exits with status 2, without a traceback.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class ProbsegError(ValueError):
    """A user-facing error: bad input, an unknown name, a file that is not what it should be."""


def did_you_mean(name: str, known: Iterable[str]) -> str:
    """Return ``" (did you mean 'x'?)"`` for the closest known name, or ``""`` when none is close."""
    close = difflib.get_close_matches(name, list(known), n=1, cutoff=0.5)
    return f" (did you mean '{close[0]}'?)" if close else ""


class PluginCollisionError(ProbsegError):
    """Two plugins registered the same name; the message names both distributions."""


class OutputError(ProbsegError):
    """Writing an output file or folder failed (no space left, no permission, a file size limit); the message
    names the path. What was written before (stored records, earlier files) is kept."""
