"""Nox sessions: tests, lint, typecheck (default); slow, bench and docs (on demand).

The CPU build of torch is installed first (``pip install torch==2.13.0``; on this project's machines it comes
from a local wheel); set PROBSEG_TORCH to another requirement (e.g. a CUDA build) to change it.
"""

from __future__ import annotations

import os

import nox

nox.options.sessions = ["tests", "lint", "typecheck"]
nox.options.reuse_existing_virtualenvs = True
TORCH = os.environ.get("PROBSEG_TORCH", "torch==2.13.0")


def install(session: nox.Session, extras: str = "test") -> None:
    session.install(TORCH)
    session.install("-e", f".[{extras}]")


@nox.session
def tests(session: nox.Session) -> None:
    """The default test suite (slow tests excluded); extra arguments go to pytest."""
    install(session)
    session.run("pytest", *session.posargs)


@nox.session
def slow(session: nox.Session) -> None:
    """The slow end-to-end tests: the README's quick runs on lidc-sample (with ccdm's) and SPU-Net's collapse on
    synthetic (about 31 minutes on 2 cores)."""
    install(session)
    session.run("pytest", "-m", "slow", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    session.install("ruff>=0.5")
    session.run("ruff", "check", "probseg_bench", "plugins", "tests", "benchmarks", "examples", "scripts", "noxfile.py")


@nox.session
def typecheck(session: nox.Session) -> None:
    install(session, "dev")
    session.run("mypy")


@nox.session
def docs(session: nox.Session) -> None:
    """The documentation site (mkdocs.yml, docs/), built strictly: a broken link or a missing API object fails it.
    The package is installed too: mkdocstrings imports it to read the docstrings."""
    install(session, "docs")
    session.run("mkdocs", "build", "--strict", "--site-dir", os.path.join(session.create_tmp(), "site"))


@nox.session
def bench(session: nox.Session) -> None:
    """The performance figures (benchmarks/perf.py; about 5 minutes on 2 cores); JSON in benchmarks/results/.
    (`python -m benchmarks.lidc_memory` measures the LIDC loading memory; it needs 2.5 GB of disk.)"""
    install(session)
    session.run("python", "-m", "benchmarks.perf", "--quick-run", *session.posargs)
