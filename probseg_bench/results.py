"""The results store: one record per evaluated fold, in a SQLAlchemy database (SQLite file by default).

``--storage`` takes a SQLAlchemy URL (``sqlite:///path.db``, ``postgresql://user@host/db``) or a plain file
path (a SQLite file). The default is ``probseg-results.db`` in the working directory. Each record is written
in one transaction; the unique key (model, dataset, latent_dim, fold, config_hash) prevents duplicates, and
a rerun skips folds already stored. The configuration hash covers the data's content fingerprint (also a column,
``data_fingerprint``, and a record field), so a result is only ever reused on the data it was computed on.
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
    inspect,
    select,
    text,
)
from sqlalchemy.engine import Engine
from sqlalchemy.exc import ArgumentError, IntegrityError, OperationalError, ProgrammingError

from probseg_bench.errors import OutputError, ProbsegError, did_you_mean

DEFAULT_STORAGE = "sqlite:///probseg-results.db"
LOCK_RETRIES = 8
SCHEMA_VERSION = 2
"""The version of the rows this code writes: 1 without the ``data_fingerprint`` column, 2 with it. A store made by
an older version gets the new (nullable) columns added when it is opened for writing
(:func:`add_missing_columns`); its old rows keep NULL there (and no fingerprint in their record)."""
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
    Column("data_fingerprint", String(64), nullable=True),  # schema 2; NULL in rows stored before it
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
    was stored); ``data_fingerprint``: the SHA-256 of the data's content the fold was computed on
    (:func:`probseg_bench.data.fingerprint.data_fingerprint`; part of ``config_hash``); ``settings_hash``: the
    configuration hash without the split and the data (:class:`probseg_bench.protocol.RunPlan`); both None in a
    record stored before data fingerprints existed (such a record is never reused by a run, and the leaderboard
    marks its data version ``unrecorded``).
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
    data_fingerprint: str | None = None
    settings_hash: str | None = None

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


def add_missing_columns(engine: Engine) -> set[str]:
    """Add to an existing ``fold_results`` table the nullable columns of :data:`fold_results` it lacks (a store made
    by an older version; ``ALTER TABLE ... ADD COLUMN``, which SQLite and PostgreSQL do in place, keeping every row);
    returns the table's column names afterwards. Two processes migrating at once: the loser's duplicate-column
    error is a schema race, retried (:func:`retry_schema_race`), and then finds the column.
    """
    def migrate() -> set[str]:
        present = {c["name"] for c in inspect(engine).get_columns(fold_results.name)}
        for column in fold_results.columns:
            if column.name not in present and column.nullable:
                kind = column.type.compile(dialect=engine.dialect)
                with engine.begin() as conn:
                    conn.execute(text(f"ALTER TABLE {fold_results.name} ADD COLUMN {column.name} {kind}"))
                present.add(column.name)
        return present

    return retry_schema_race(migrate)


class ResultsStore:
    """Read and write :class:`FoldRecord` objects. ``create`` False (the commands that only read): a SQLite file
    that does not exist is an error instead of a new empty store.

    Raises:
        ProbsegError: an unusable URL, a file that is not a results database, or a database server that cannot
            be reached within :func:`probseg_bench.connections.connect_timeout` seconds (10 by default; one line
            naming the URL, its password hidden).
    """

    def __init__(self, storage: str = DEFAULT_STORAGE, create: bool = True) -> None:
        from probseg_bench.connections import db_connect_args, db_error, display_url, error_line

        self.url = normalize_url(storage)
        shown = self.shown = display_url(storage)
        try:
            # connecting to a server is bounded by its driver's connect timeout (probseg_bench.connections)
            self.engine: Engine = create_engine(self.url, connect_args=db_connect_args(self.url))
        except (ArgumentError, ImportError) as exc:
            raise ProbsegError(f"--storage {shown!r}: not a usable SQLAlchemy URL ({error_line(exc)})") from None
        database = self.engine.url.database
        if (not create and self.engine.dialect.name == "sqlite" and database not in (None, "", ":memory:")
                and not Path(database).is_file()):
            raise ProbsegError(f"--storage {storage!r}: no results store at {database} (nothing was run into it; "
                               "check the path or the working directory)")
        if self.engine.dialect.name == "sqlite":
            event.listen(self.engine, "connect", _sqlite_pragmas)
        try:
            retry_schema_race(lambda: _metadata.create_all(self.engine))
            # a store of an older version: its new columns, when opened to write (reading needs none of them)
            self.columns = (add_missing_columns(self.engine) if create else
                            {c["name"] for c in inspect(self.engine).get_columns(fold_results.name)})
        except OperationalError as exc:  # includes a server that refuses or does not answer within the bound
            raise ProbsegError(f"--storage {shown!r}: cannot open the results database ({db_error(exc, self.url)})"
                               ) from None
        except Exception as exc:  # e.g. sqlite3.DatabaseError "file is not a database"
            raise ProbsegError(f"--storage {shown!r}: not a results database ({error_line(exc)})") from None

    def get(self, key: FoldKey) -> FoldRecord | None:
        """The stored record with this key, or None."""
        c = fold_results.c
        query = select(c.record).where(
            c.model == key.model, c.dataset == key.dataset, c.latent_dim == key.latent_dim,
            c.fold == key.fold, c.config_hash == key.config_hash,
        )
        with self.engine.connect() as conn:
            row = conn.execute(query).scalar()
        return None if row is None else self._decode(row, f"the record of {key.model}/{key.dataset} d="
                                                          f"{key.latent_dim} fold {key.fold} config {key.config_hash}")

    def _decode(self, row: Any, which: str) -> FoldRecord:
        """A stored record's JSON as a :class:`FoldRecord`.

        Raises:
            ProbsegError: one line naming the store and the record: damaged (not JSON, not a record's fields).
        """
        try:
            fields = json.loads(row)
            return FoldRecord(**fields)
        except (ValueError, TypeError):  # bad JSON, not an object, unknown or missing fields
            raise ProbsegError(f"--storage {self.shown!r}: {which} is damaged (not a probseg-bench fold record of "
                               "this version); delete its row from the fold_results table, or use another --storage"
                               ) from None

    def add(self, record: FoldRecord) -> None:
        """Insert one record in one transaction.

        Raises:
            ProbsegError: a record with the same key is already stored.
            OutputError: the database cannot be written (disk full, read-only, locked for too long); the records
                stored before are kept.
        """
        row = {
            "model": record.model, "dataset": record.dataset, "latent_dim": record.latent_dim,
            "fold": record.fold, "config_hash": record.config_hash, "seed": record.seed,
            "preset": record.preset, "split_hash": record.split_hash, "created_at": record.created_at,
            "schema_version": SCHEMA_VERSION, "record": json.dumps(asdict(record), allow_nan=True),
        }
        if "data_fingerprint" in self.columns:
            row["data_fingerprint"] = record.data_fingerprint
        else:  # a store opened only to read, never migrated: the row of the schema it has
            row["schema_version"] = 1
        for attempt in range(LOCK_RETRIES):
            try:
                with self.engine.begin() as conn:
                    conn.execute(fold_results.insert().values(**row))
                return
            except IntegrityError:
                raise ProbsegError(f"a record for {record.key} is already stored in {self.url}") from None
            except OperationalError as exc:  # another process holds the SQLite write lock for long
                if "locked" not in str(exc.orig) or attempt == LOCK_RETRIES - 1:
                    raise OutputError(f"{self.url}: cannot write the record ({exc.orig})") from None
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
        query = select(c.record, c.id).order_by(c.id)
        if models:
            query = query.where(c.model.in_(list(models)))
        if datasets:
            query = query.where(c.dataset.in_(list(datasets)))
        if latent_dims:
            query = query.where(c.latent_dim.in_(list(latent_dims)))
        with self.engine.connect() as conn:
            rows = conn.execute(query).all()
        records = [self._decode(r, f"the record in row id {i}") for r, i in rows]
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
