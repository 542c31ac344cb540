"""Bounded connections: every network connection the suite opens fails within a known time, with one line naming
the address, instead of retrying for minutes (or for ever).

The connections are the Ray cluster of ``--executor ray --address`` (:func:`ray_connect_settings`,
:func:`check_reachable`) and a database server behind ``--storage`` (the results store, Optuna's studies:
:func:`db_connect_args`). The bound is :data:`CONNECT_TIMEOUT_S` seconds, or the environment variable
:data:`TIMEOUT_ENV` (seconds, > 0) where a slow network needs more:

- a database server: the driver's own connect timeout (libpq's ``connect_timeout`` for PostgreSQL through
  psycopg / psycopg2, ``connect_timeout`` for MySQL / MariaDB through PyMySQL, mysqlclient or MariaDB Connector; in
  whole seconds, at least 2), a bound on the whole connection (TCP, TLS, authentication): a refused port fails at
  once, a host or server that does not answer after the bound. A ``connect_timeout`` in the URL's query wins.
  Other drivers keep their own defaults; SQLite files open no connection.
- a Ray cluster: a TCP connection to its head's GCS port (:func:`check_reachable`, socket timeout = the bound),
  then Ray's own settings for the handshake, set unless the environment already sets them: one GCS connection
  attempt (``RAY_gcs_server_port_wait_time_s=1``; Ray's default is 20 attempts of ~40 s each, the reported hang)
  whose cluster-ID request waits the bound (``RAY_py_gcs_connect_timeout_s``, default 30). With Ray's two fixed 5 s
  channel waits, a port that accepts but is no Ray head fails after about the bound + 10 s. A Ray Client address
  (``ray://``) makes Ray's 3 attempts of a third of the bound each (``RAY_CLIENT_INITIAL_CONNECTION_TIMEOUT_S``,
  ``RAY_CLIENT_MAX_CONNECTION_TIMEOUT_S``; Ray's defaults 5, 10 and 15 s).

Name resolution (DNS) of a host name comes first and is bounded by the system's resolver, not here.
"""

from __future__ import annotations

import math
import os
import socket
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from probseg_bench.errors import ProbsegError

CONNECT_TIMEOUT_S = 10.0
"""Seconds a connection to a server (database, Ray head) may take before it fails (see the module docstring)."""
TIMEOUT_ENV = "PROBSEG_CONNECT_TIMEOUT_S"
"""Environment variable overriding :data:`CONNECT_TIMEOUT_S` (seconds, a number > 0)."""
RAY_EXTRA_S = 10.0
"""Ray's own fixed waits in a failed GCS handshake (its GCS channel and pubsub connects, 5 s each): a Ray address
that accepts TCP but does not answer as a Ray head fails after about :func:`connect_timeout` + this."""

# the keyword of each SQLAlchemy driver's DBAPI ``connect()`` that bounds establishing a connection (only there)
_DRIVER_TIMEOUT_ARG = {
    "psycopg": "connect_timeout",
    "psycopg2": "connect_timeout",
    "psycopg2cffi": "connect_timeout",
    "pymysql": "connect_timeout",
    "mysqldb": "connect_timeout",
    "mariadbconnector": "connect_timeout",
}


def connect_timeout() -> float:
    """The connection bound in seconds: :data:`TIMEOUT_ENV` when set, else :data:`CONNECT_TIMEOUT_S`.

    Raises:
        ProbsegError: the variable is set but not a number > 0 (names the variable).
    """
    raw = os.environ.get(TIMEOUT_ENV, "").strip()
    if not raw:
        return CONNECT_TIMEOUT_S
    try:
        value = float(raw)
    except ValueError:
        value = float("nan")
    if not value > 0 or value == float("inf"):
        raise ProbsegError(f"{TIMEOUT_ENV}={raw!r}: expected a number of seconds > 0")
    return value


def display_url(storage: str) -> str:
    """``storage`` as it may be shown: a URL with its password replaced by ``***``; anything else unchanged."""
    if "://" not in storage:
        return storage
    try:
        from sqlalchemy.engine import make_url

        return make_url(storage).render_as_string(hide_password=True)
    except Exception:  # not a URL SQLAlchemy parses: shown as given (it names no password it could parse)
        return storage


def db_connect_args(url: str) -> dict[str, Any]:
    """The ``connect_args`` for SQLAlchemy's ``create_engine(url)`` that bound connecting to a database server by
    :func:`connect_timeout` (whole seconds, rounded up, at least 2: libpq's minimum); ``{}`` for SQLite, for a
    driver not listed in the module docstring, for a URL that already sets the timeout in its query, and for a URL
    SQLAlchemy cannot parse (``create_engine`` then names the problem).

    Raises:
        ProbsegError: :data:`TIMEOUT_ENV` is not a number > 0.
    """
    from sqlalchemy.engine import make_url

    try:
        parsed = make_url(url)
        driver = parsed.get_driver_name()
    except Exception:  # ArgumentError, or a dialect SQLAlchemy does not know (NoSuchModuleError)
        return {}
    arg = _DRIVER_TIMEOUT_ARG.get(driver)
    if arg is None or arg in parsed.query:
        return {}
    return {arg: max(2, math.ceil(connect_timeout()))}


def error_line(exc: BaseException) -> str:
    """A driver's or SQLAlchemy's error on one line: the DBAPI error inside a SQLAlchemy one (``exc.orig``, without
    SQLAlchemy's statement and link lines), its lines joined by ``; ``."""
    inner = getattr(exc, "orig", None) or exc
    lines = [" ".join(line.split()) for line in str(inner).splitlines()]
    text = "; ".join(line for line in lines if line and not line.startswith("(Background on this error"))
    return text or type(inner).__name__


def db_error(exc: BaseException, url: str) -> str:
    """:func:`error_line` of a failure to open the database at ``url``, followed, where :func:`db_connect_args`
    bounds its connection, by that bound (``"...; connect timeout 10 s"``)."""
    args = db_connect_args(url)
    return error_line(exc) + (f"; connect timeout {next(iter(args.values()))} s" if args else "")


def _host_port(address: str, default_port: int | None = None) -> tuple[str, int]:
    """``host:port`` (or ``[v6]:port``) -> (host, port).

    Raises:
        ProbsegError: no port (and no ``default_port``), or a port that is not a number in 1..65535.
    """
    host, sep, port = address.rpartition(":")
    if not sep or "]" in port:
        host, port = address, ""
    host = host.strip("[]")
    if not port and default_port is not None:
        return host, default_port
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ProbsegError(f"--address {address}: expected HOST:PORT (a port in 1..65535), 'auto' or "
                           "ray://HOST:PORT")
    return host, int(port)


def check_reachable(host: str, port: int, what: str, timeout: float | None = None) -> None:
    """Open (and close) a TCP connection to ``host:port`` within ``timeout`` seconds (default
    :func:`connect_timeout`); ``what`` names the address for the message, e.g. ``"--address 10.0.0.5:6379: the Ray
    cluster's head"``.

    Raises:
        ProbsegError: refused, no answer within the timeout, unknown host, or an unreachable network (one line:
            ``what``, the address tried, the reason).
    """
    timeout = connect_timeout() if timeout is None else timeout
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return
    except ConnectionRefusedError:
        reason = "connection refused (nothing listens on that port)"
    except TimeoutError:  # socket.timeout is TimeoutError
        reason = f"no answer within {timeout:g} s (a host that is down, or a firewall)"
    except socket.gaierror as exc:
        reason = f"unknown host ({exc.strerror or exc})"
    except OSError as exc:
        reason = exc.strerror or str(exc) or type(exc).__name__
    raise ProbsegError(f"{what}: cannot connect to {host}:{port}: {reason}")


def ray_target(address: str) -> tuple[str, int] | None:
    """The (host, port) that ``ray.init(address=address)`` connects to: a Ray Client ``ray://host[:port]`` (port
    10001 by default), else the GCS address after Ray's own resolution of ``auto`` (``RAY_ADDRESS``, the last
    ``ray start`` on this machine) and of this machine's names (Ray connects to its node IP address for
    ``127.0.0.1``); None where Ray starts a local cluster or finds none to connect to (``ray.init`` then says so
    at once). Imports Ray.

    Raises:
        ProbsegError: an address that is not ``host:port``.
    """
    if address.startswith("ray://"):
        return _host_port(address[len("ray://"):].split("/")[0], default_port=10001)
    if address not in ("auto", "local"):
        _host_port(address)  # the format, before Ray logs its own error for it
    try:
        from ray._private.services import canonicalize_bootstrap_address  # the address ray.init resolves

        resolved = canonicalize_bootstrap_address(address)
    except (ImportError, AttributeError, TypeError):  # another Ray version: the address as given
        resolved = None if address in ("auto", "local") else address
    except Exception:  # ValueError (a bad format) and friends: ray.init reports them
        resolved = None
    return None if resolved is None else _host_port(resolved)


def ray_connect_settings() -> dict[str, str]:
    """Ray's settings (environment variables) that bound connecting a driver to an existing cluster (see the module
    docstring); those already in the environment are left out (the user's choice wins)."""
    bound = connect_timeout()
    client_attempt = str(max(1, math.ceil(bound / 3)))  # Ray Client makes 3 attempts
    wanted = {"RAY_gcs_server_port_wait_time_s": "1", "RAY_py_gcs_connect_timeout_s": str(max(1, math.ceil(bound))),
              "RAY_CLIENT_INITIAL_CONNECTION_TIMEOUT_S": client_attempt,
              "RAY_CLIENT_MAX_CONNECTION_TIMEOUT_S": client_attempt}
    return {k: v for k, v in wanted.items() if k not in os.environ}


@contextmanager
def environment(settings: Mapping[str, str]) -> Iterator[None]:
    """Set the environment variables ``settings`` inside the block; restore them after (Ray reads some of its
    settings at import, some at ``ray.init``: both must happen inside)."""
    saved = {k: os.environ.get(k) for k in settings}
    os.environ.update(settings)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


__all__ = ["CONNECT_TIMEOUT_S", "RAY_EXTRA_S", "TIMEOUT_ENV", "check_reachable", "connect_timeout",
           "db_connect_args", "db_error", "display_url", "environment", "error_line", "ray_connect_settings",
           "ray_target"]
