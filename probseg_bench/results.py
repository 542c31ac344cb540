"""The results store: one record per evaluated fold, in a SQLAlchemy database (SQLite file by default).

``--storage`` takes a SQLAlchemy URL (``sqlite:///path.db``, ``postgresql://user@host/db``) or a plain file
path (a SQLite file). The default is ``probseg-results.db`` in the working directory. Each record is written
in one transaction; the unique key (model, dataset, latent_dim, fold, config_hash) prevents duplicates, and
a rerun skips folds already stored.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import (
    Column,
    Float,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    create_engine,
    event,
    select,
)
from sqlalchemy.engine import Engine
from sqlalchemy.exc import ArgumentError, IntegrityError, OperationalError, ProgrammingError

from probseg_bench.errors import ProbsegError, did_you_mean

DEFAULT_STORAGE = "sqlite:///probseg-results.db"
LOCK_RETRIES = 8
SCHEMA_VERSION = 1
T = TypeVar("T")

_metadata = MetaData()
fold_results = Table(
    "fold_results",
    _metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("model", String(128), nullable=False),
    Column("dataset", String(128), nullable=False),
    Column("latent_dim", Integer, nullable=False),
    Column("fold", Integer, nullable=False),
    Column("config_hash", String(32), nullable=False),
    Column("seed", Integer, nullable=False),
    Column("preset", String(64), nullable=False),
    Column("split_hash", String(32), nullable=False),
    Column("created_at", Float, nullable=False),
    Column("schema_version", Integer, nullable=False),
    Column("record", Text, nullable=False),
    UniqueConstraint("model", "dataset", "latent_dim", "fold", "config_hash", name="uq_fold_cell"),
)


@dataclass(frozen=True)
class FoldKey:
    """Identifies one fold evaluation: a cell of the grid under one configuration."""

    model: str
    dataset: str
    latent_dim: int
    fold: int
    config_hash: str


@dataclass
class FoldRecord:
    """One evaluated fold.

    ``metrics``: the mean over test images of each metric; ``per_image``: metric -> list over test images (same
    order as ``test_ids``, the items' indices in the dataset; ``test_groups`` their groups); ``variant``: what
    the user changed from the model's defaults (``--regularizer``, ``--hp``), empty for the defaults;
    ``dataset_params``: the dataset plugin's resolved parameters; ``timings``: seconds (training, sampling,
    metrics); ``protocol``: the resolved preset settings; ``hyperparameters``: model and regularizer
    hyperparameters and the objective's terms; ``versions``: package versions and git commit; ``status``:
    ``ok``, or ``failed`` with ``failure`` the reason (e.g. a diverged training; no metrics then); ``latent_size``: the
    prior's number of dimensions over all levels (None without a latent prior, or in a record written before it
    was stored).
    """

    model: str
    dataset: str
    latent_dim: int
    fold: int
    seed: int
    preset: str
    config_hash: str
    split_hash: str
    hyperparameters: dict[str, Any]
    protocol: dict[str, Any]
    metrics: dict[str, float | None]
    per_image: dict[str, list[float]]
    test_ids: list[str]
    timings: dict[str, float]
    versions: dict[str, str]
    variant: str = ""
    test_groups: list[str] = field(default_factory=list)
    dataset_params: dict[str, Any] = field(default_factory=dict)
    best_epoch: int = 0
    best_val_loss: float | None = None
    history: list[dict[str, Any]] = field(default_factory=list)
    checkpoint: str | None = None
    status: str = "ok"
    failure: str | None = None
    created_at: float = field(default_factory=time.time)
    latent_size: int | None = None

    @property
    def key(self) -> FoldKey:
        return FoldKey(self.model, self.dataset, self.latent_dim, self.fold, self.config_hash)


def normalize_url(storage: str) -> str:
    """A SQLAlchemy URL, or a file path turned into ``sqlite:///<path>``."""
    return storage if "://" in storage else f"sqlite:///{storage}"


def _sqlite_pragmas(dbapi_connection: Any, _: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def is_schema_race(exc: BaseException) -> bool:
    """Whether ``exc`` is what the loser of a concurrent ``CREATE TABLE`` on a fresh database sees.

    Two processes started together both find no tables and both create them; the loser fails with "table ...
    already exists" (SQLite), a duplicate-object error (PostgreSQL), a lock timeout, or a unique violation when
    both insert the schema's version row.
    """
    if isinstance(exc, IntegrityError):  # e.g. Optuna's schema-version row inserted twice
        return True
    text = str(exc).lower()
    return isinstance(exc, (OperationalError, ProgrammingError)) and any(
        marker in text for marker in ("already exists", "duplicate", "database is locked"))


def retry_schema_race(create: Callable[[], T], attempts: int = 5) -> T:
    """Call ``create`` (which creates a schema if absent), retrying while another process is creating it.

    The schema is complete once the winner commits, so a retry finds it. Any other error, or the last
    attempt's, is raised unchanged.
    """
    for attempt in range(attempts):
        try:
            return create()
        except Exception as exc:
            if not is_schema_race(exc) or attempt == attempts - 1:
                raise
            time.sleep(0.2 * (attempt + 1))
    raise AssertionError("unreachable")


class ResultsStore:
    """Read and write :class:`FoldRecord` objects. ``create`` False (the commands that only read): a SQLite file
    that does not exist is an error instead of a new empty store.

    Raises:
        ProbsegError: an unusable URL or a file that is not a results database (the message names it).
    """

    def __init__(self, storage: str = DEFAULT_STORAGE, create: bool = True) -> None:
        self.url = normalize_url(storage)
        try:
            self.engine: Engine = create_engine(self.url)
        except (ArgumentError, ImportError) as exc:
            raise ProbsegError(f"--storage {storage!r}: not a usable SQLAlchemy URL ({exc})") from None
        database = self.engine.url.database
        if (not create and self.engine.dialect.name == "sqlite" and database not in (None, "", ":memory:")
                and not Path(database).is_file()):
            raise ProbsegError(f"--storage {storage!r}: no results store at {database} (nothing was run into it; "
                               "check the path or the working directory)")
        if self.engine.dialect.name == "sqlite":
            event.listen(self.engine, "connect", _sqlite_pragmas)
        try:
            retry_schema_race(lambda: _metadata.create_all(self.engine))
        except OperationalError as exc:
            raise ProbsegError(f"--storage {storage!r}: cannot open the results database ({exc.orig})") from None
        except Exception as exc:  # e.g. sqlite3.DatabaseError "file is not a database"
            raise ProbsegError(f"--storage {storage!r}: not a results database ({exc})") from None

    def get(self, key: FoldKey) -> FoldRecord | None:
        """The stored record with this key, or None."""
        c = fold_results.c
        query = select(c.record).where(
            c.model == key.model, c.dataset == key.dataset, c.latent_dim == key.latent_dim,
            c.fold == key.fold, c.config_hash == key.config_hash,
        )
        with self.engine.connect() as conn:
            row = conn.execute(query).scalar()
        return None if row is None else FoldRecord(**json.loads(row))

    def add(self, record: FoldRecord) -> None:
        """Insert one record in one transaction.

        Raises:
            ProbsegError: a record with the same key is already stored.
        """
        row = {
            "model": record.model, "dataset": record.dataset, "latent_dim": record.latent_dim,
            "fold": record.fold, "config_hash": record.config_hash, "seed": record.seed,
            "preset": record.preset, "split_hash": record.split_hash, "created_at": record.created_at,
            "schema_version": SCHEMA_VERSION, "record": json.dumps(asdict(record), allow_nan=True),
        }
        for attempt in range(LOCK_RETRIES):
            try:
                with self.engine.begin() as conn:
                    conn.execute(fold_results.insert().values(**row))
                return
            except IntegrityError:
                raise ProbsegError(f"a record for {record.key} is already stored in {self.url}") from None
            except OperationalError as exc:  # another process holds the SQLite write lock for long
                if "locked" not in str(exc.orig) or attempt == LOCK_RETRIES - 1:
                    raise ProbsegError(f"{self.url}: cannot write the record ({exc.orig})") from None
                time.sleep(min(0.1 * 2**attempt, 5.0))

    def delete(self, key: FoldKey) -> None:
        """Remove the record with this key (e.g. a failed fold to be retried)."""
        c = fold_results.c
        with self.engine.begin() as conn:
            conn.execute(fold_results.delete().where(
                c.model == key.model, c.dataset == key.dataset, c.latent_dim == key.latent_dim,
                c.fold == key.fold, c.config_hash == key.config_hash,
            ))

    def names(self) -> tuple[list[str], list[str]]:
        """(the stored models, the stored datasets), sorted: for a filter that matches nothing."""
        c = fold_results.c
        with self.engine.connect() as conn:
            models = conn.execute(select(c.model).distinct()).scalars().all()
            datasets = conn.execute(select(c.dataset).distinct()).scalars().all()
        return sorted(models), sorted(datasets)

    def check_names(self, models: Iterable[str] = (), datasets: Iterable[str] = ()) -> None:
        """A ``--model`` / ``--dataset`` filter that names nothing stored is an error listing the stored names (a
        typo would otherwise give an empty table).

        Raises:
            ProbsegError: a name with no record here (with the closest stored name).
        """
        stored_models, stored_datasets = self.names()
        for option, wanted, stored in (("--model", models, stored_models), ("--dataset", datasets, stored_datasets)):
            for name in wanted:
                if name not in stored:
                    raise ProbsegError(f"{option} {name}: no records in {self.url}{did_you_mean(name, stored)}; "
                                       f"stored: {', '.join(stored) or 'nothing'}")

    def records(
        self,
        models: Iterable[str] | None = None,
        datasets: Iterable[str] | None = None,
        latent_dims: Iterable[int] | None = None,
        include_failed: bool = False,
    ) -> list[FoldRecord]:
        """The stored records (the successful ones unless ``include_failed``), optionally filtered, in insertion
        order."""
        c = fold_results.c
        query = select(c.record).order_by(c.id)
        if models:
            query = query.where(c.model.in_(list(models)))
        if datasets:
            query = query.where(c.dataset.in_(list(datasets)))
        if latent_dims:
            query = query.where(c.latent_dim.in_(list(latent_dims)))
        with self.engine.connect() as conn:
            rows = conn.execute(query).scalars().all()
        records = [FoldRecord(**json.loads(r)) for r in rows]
        return records if include_failed else [r for r in records if r.status == "ok"]


def select_configurations(records: list[FoldRecord], config_hashes: Iterable[str] = (),
                          presets: Iterable[str] = ()) -> list[FoldRecord]:
    """The records whose configuration hash starts with one of ``config_hashes`` (prefixes, as the leaderboard's
    config column shows them) and whose preset is one of ``presets``; an empty filter keeps everything.

    Raises:
        ProbsegError: a prefix that matches no stored configuration (the message lists the stored ones).
    """
    prefixes, wanted = [p.strip().lower() for p in config_hashes], set(presets)
    kept = [r for r in records if not wanted or r.preset in wanted]
    if not prefixes:
        return kept
    for prefix in prefixes:
        if not prefix or not any(r.config_hash.startswith(prefix) for r in kept):
            stored = sorted({(r.config_hash[:8], r.model, r.variant, r.dataset, r.preset) for r in kept})
            listing = "; ".join(f"{h} ({m}{f' ({v})' if v else ''} on {d}, {p})"
                                for h, m, v, d, p in stored) or "none"
            raise ProbsegError(f"--config-hash {prefix!r}: no stored configuration starts with it; stored: {listing}")
    return [r for r in kept if any(r.config_hash.startswith(p) for p in prefixes)]
