"""Issue 25, items 3 and 4.

3. Every connection the suite opens (a Ray cluster, a database server behind ``--storage`` for the results store and
   for Optuna) fails within a bounded, documented time (:mod:`probseg_bench.connections`) with one line naming the
   address: a refused port, a host that never answers (a listening socket whose accept queue is full drops the
   connection attempts, like a firewall), and a server that accepts TCP but never answers.
4. Output works on any terminal encoding (:mod:`probseg_bench.terminal`): every command's output on an ASCII stream
   (``PYTHONIOENCODING=ascii``, and the C locale without UTF-8 mode) is ASCII stand-ins, not a UnicodeEncodeError;
   files are UTF-8 whatever the locale.
"""

from __future__ import annotations

import io
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from probseg_bench.connections import (
    CONNECT_TIMEOUT_S,
    RAY_EXTRA_S,
    TIMEOUT_ENV,
    check_reachable,
    connect_timeout,
    db_connect_args,
    display_url,
    error_line,
)
from probseg_bench.errors import ProbsegError
from probseg_bench.terminal import ASCII_FALLBACKS, ascii_fallback, to_ascii, use_ascii_fallbacks

REPO = Path(__file__).resolve().parents[1]
T = ["--dataset", "synthetic", "--dataset-param", "n_images=16", "--dataset-param", "size=32", "--preset", "quick",
     "--epochs", "1", "--fold", "0"]
RAY_LOG = re.compile(r"^\[\d{4}-\d\d-\d\d ")  # Ray's own C++ log lines on stderr
STARTUP_S = 60.0
"""Generous time for a CLI subprocess to start (torch, plugins) on a loaded 2-core machine; the bound under test
comes on top of it and is asserted separately where it can be measured inside the process."""
NEEDS_RAY = "Ray is not installed (pip install 'probseg-bench[ray]'): the Ray connection bound is not tested"


def _env(**changes: str | None) -> dict[str, str]:
    """This process's environment with ``changes`` (None: removed) and one torch thread."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for key, value in changes.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    return env


C_LOCALE = {"LC_ALL": "C", "LANG": "C", "PYTHONUTF8": "0", "PYTHONIOENCODING": None}
"""The strictest terminal: the C locale with Python's UTF-8 mode off (stdout ASCII, files ASCII by default)."""


def _cli(args: list[str], env: dict[str, str | None] | None = None,
         timeout: float = 300) -> tuple[int, bytes, bytes, float]:
    """``probseg-bench ARGS`` in a subprocess: (exit code, stdout bytes, stderr bytes, seconds)."""
    full = _env(**(env or {}))
    start = time.monotonic()
    done = subprocess.run([sys.executable, "-c", "from probseg_bench.cli import main; main()", *args],
                          capture_output=True, env=full, timeout=timeout, cwd=REPO)
    return done.returncode, done.stdout, done.stderr, time.monotonic() - start


def _error_lines(stderr: bytes) -> list[str]:
    return [line for line in stderr.decode("ascii").splitlines() if line.startswith("error:")]


# --------------------------------------------------------------------------------------------------------------
# fake servers


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def silent_server() -> Iterator[int]:
    """A port on every interface that completes TCP connections (the kernel's backlog) and never answers."""
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("0.0.0.0", 0))
    srv.listen(64)
    yield int(srv.getsockname()[1])
    srv.close()


@pytest.fixture
def no_answer() -> Iterator[int]:
    """A port on 127.0.0.1 where a connection attempt gets no answer at all (its accept queue is full, so the
    kernel drops the SYN, as a firewall or a host that is down does)."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(0)
    port = int(srv.getsockname()[1])
    fillers = []
    for _ in range(4):
        c = socket.socket()
        c.setblocking(False)
        try:
            c.connect(("127.0.0.1", port))
        except BlockingIOError:
            pass
        fillers.append(c)
    time.sleep(0.3)
    probe = socket.socket()
    probe.settimeout(0.5)
    try:
        probe.connect(("127.0.0.1", port))
        pytest.skip("this kernel accepts connections beyond a full backlog: cannot simulate a silent host")
    except (TimeoutError, OSError):
        pass
    finally:
        probe.close()
    yield port
    for c in fillers:
        c.close()
    srv.close()


# --------------------------------------------------------------------------------------------------------------
# item 3: the bound itself


def test_the_bound_defaults_to_10_s_and_is_set_by_the_environment(monkeypatch):
    monkeypatch.delenv(TIMEOUT_ENV, raising=False)
    assert connect_timeout() == CONNECT_TIMEOUT_S == 10.0
    monkeypatch.setenv(TIMEOUT_ENV, "2.5")
    assert connect_timeout() == 2.5
    for bad in ("0", "-3", "soon", "inf", "nan"):
        monkeypatch.setenv(TIMEOUT_ENV, bad)
        expected = rf"^{TIMEOUT_ENV}='{re.escape(bad)}': expected a number of seconds > 0$"
        with pytest.raises(ProbsegError, match=expected):
            connect_timeout()


def test_each_server_driver_gets_its_own_connect_timeout(monkeypatch):
    monkeypatch.delenv(TIMEOUT_ENV, raising=False)
    assert db_connect_args("postgresql://u@db.example/x") == {"connect_timeout": 10}  # psycopg (SQLAlchemy 2.1)
    assert db_connect_args("postgresql+psycopg2://u@db.example/x") == {"connect_timeout": 10}
    assert db_connect_args("mysql+pymysql://u@db.example/x") == {"connect_timeout": 10}
    assert db_connect_args("sqlite:///results.db") == {}  # a file: no connection to bound
    assert db_connect_args("postgresql://u@db.example/x?connect_timeout=30") == {}  # the URL's own value wins
    assert db_connect_args("nonsense://x") == {}  # create_engine names the problem
    monkeypatch.setenv(TIMEOUT_ENV, "0.5")
    assert db_connect_args("postgresql://u@db.example/x") == {"connect_timeout": 2}  # libpq's minimum


def test_a_url_is_shown_without_its_password():
    assert display_url("postgresql://alice:s3cret@db.example:5432/x") == "postgresql://alice:***@db.example:5432/x"
    assert display_url("results.db") == "results.db"


def test_a_driver_error_becomes_one_line():
    exc = RuntimeError('connection failed: port 1 failed: Connection refused\n\tIs the server running?\n')
    assert error_line(exc) == "connection failed: port 1 failed: Connection refused; Is the server running?"


def test_a_refused_port_fails_at_once_naming_it():
    port = _closed_port()
    start = time.monotonic()
    with pytest.raises(ProbsegError) as info:
        check_reachable("127.0.0.1", port, "--address x")
    assert time.monotonic() - start < 2
    assert str(info.value) == f"--address x: cannot connect to 127.0.0.1:{port}: connection refused (nothing listens " \
                              "on that port)"


def test_a_host_that_never_answers_fails_after_the_timeout(no_answer):
    start = time.monotonic()
    with pytest.raises(ProbsegError, match=rf"^--address x: cannot connect to 127\.0\.0\.1:{no_answer}: no answer "
                                           r"within 1 s \(a host that is down, or a firewall\)$"):
        check_reachable("127.0.0.1", no_answer, "--address x", timeout=1)
    assert 0.9 < time.monotonic() - start < 4


def test_an_unknown_host_fails_naming_it():
    with pytest.raises(ProbsegError, match=r"^--address x: cannot connect to no-such-host\.invalid:6379: unknown "):
        check_reachable("no-such-host.invalid", 6379, "--address x")


# --------------------------------------------------------------------------------------------------------------
# item 3: the results store and Optuna's storage on a database server


def _assert_bounded_one_line(exc: ProbsegError, port: int, elapsed: float, bound: float) -> None:
    message = str(exc)
    assert "\n" not in message and f"127.0.0.1:{port}" in message and "secret" not in message, message
    assert elapsed < bound + 5, f"took {elapsed:.1f} s, bound {bound} s"


@pytest.mark.parametrize("server", ["silent_server", "no_answer"])
def test_the_results_store_on_an_unanswering_server_fails_within_the_bound(server, request, monkeypatch):
    pytest.importorskip("psycopg", reason="psycopg is not installed: the PostgreSQL driver's timeout is not tested")
    from probseg_bench.results import ResultsStore

    port = request.getfixturevalue(server)
    monkeypatch.setenv(TIMEOUT_ENV, "2")
    start = time.monotonic()
    with pytest.raises(ProbsegError) as info:
        ResultsStore(f"postgresql://alice:secret@127.0.0.1:{port}/results")
    _assert_bounded_one_line(info.value, port, time.monotonic() - start, 2)
    assert str(info.value).startswith(f"--storage 'postgresql://alice:***@127.0.0.1:{port}/results': cannot open the "
                                      "results database (")
    assert str(info.value).endswith("; connect timeout 2 s)")


def test_the_results_store_on_a_refused_port_fails_in_one_line(monkeypatch):
    pytest.importorskip("psycopg", reason="psycopg is not installed: the PostgreSQL driver's errors are not tested")
    from probseg_bench.results import ResultsStore

    port = _closed_port()
    start = time.monotonic()
    with pytest.raises(ProbsegError) as info:
        ResultsStore(f"postgresql://127.0.0.1:{port}/x", create=False)
    _assert_bounded_one_line(info.value, port, time.monotonic() - start, 0)
    assert "Connection refused" in str(info.value)


def test_an_optuna_study_on_an_unanswering_server_fails_within_the_bound(silent_server, monkeypatch):
    pytest.importorskip("psycopg", reason="psycopg is not installed: the PostgreSQL driver's timeout is not tested")
    pytest.importorskip("optuna")
    from probseg_bench.tuning import open_study

    monkeypatch.setenv(TIMEOUT_ENV, "2")
    start = time.monotonic()
    with pytest.raises(ProbsegError) as info:
        open_study("s", f"postgresql://alice:secret@127.0.0.1:{silent_server}/studies", seed=0)
    _assert_bounded_one_line(info.value, silent_server, time.monotonic() - start, 2)
    assert "cannot open it for Optuna" in str(info.value)


def test_the_leaderboard_on_an_unanswering_server_prints_one_line(silent_server):
    pytest.importorskip("psycopg", reason="psycopg is not installed: the PostgreSQL driver's timeout is not tested")
    url = f"postgresql://alice:secret@127.0.0.1:{silent_server}/x"
    code, out, err, elapsed = _cli(["leaderboard", "--storage", url], {TIMEOUT_ENV: "2"})
    assert code == 2 and out == b""
    assert err.decode().splitlines() == [
        f"error: --storage 'postgresql://alice:***@127.0.0.1:{silent_server}/x': cannot open the results database "
        "(connection timeout expired; connect timeout 2 s)"]
    assert elapsed < STARTUP_S + 2


# --------------------------------------------------------------------------------------------------------------
# item 3: Ray


def test_the_issues_unreachable_ray_address_fails_in_one_line(tmp_path):
    """The issue's command: ``--address 127.0.0.1:1`` printed ``Failed to get cluster ID from GCS server`` every
    ~40 s for ever."""
    pytest.importorskip("ray", reason=NEEDS_RAY)
    code, _, err, elapsed = _cli(["run", "--model", "punet", *T, "--executor", "ray", "--address", "127.0.0.1:1",
                                    "--storage", str(tmp_path / "r.db"), "--run-dir", str(tmp_path / "runs")],
                                   timeout=STARTUP_S + 60)
    text = err.decode()
    assert code == 2, text
    assert "cluster ID" not in text and not any(RAY_LOG.match(line) for line in text.splitlines())
    (line,) = _error_lines(err)
    assert line == text.splitlines()[-1]
    assert re.fullmatch(r"error: --address 127\.0\.0\.1:1: the Ray cluster's head: cannot connect to [\w.:\[\]]+:1: "
                        r"connection refused \(nothing listens on that port\)", line), line
    assert elapsed < STARTUP_S


_RAY_SESSION = """
import sys, time
from probseg_bench.errors import ProbsegError
from probseg_bench.executors import ray_session
start = time.monotonic()
try:
    with ray_session(sys.argv[1]):
        print("CONNECTED")
except ProbsegError as exc:
    print("ERROR", exc)
print("ELAPSED", time.monotonic() - start)
"""


@pytest.mark.parametrize("address", ["127.0.0.1:{port}", "ray://127.0.0.1:{port}"])
def test_a_ray_address_that_accepts_but_never_answers_fails_within_the_bound(silent_server, address):
    """Ray's own handshake (one GCS attempt instead of 20 of ~40 s each) bounded by the timeout + Ray's fixed
    waits; measured in a fresh process (Ray reads some of its settings when imported)."""
    pytest.importorskip("ray", reason=NEEDS_RAY)
    address = address.format(port=silent_server)
    done = subprocess.run([sys.executable, "-c", _RAY_SESSION, address], capture_output=True, text=True,
                          env=_env(**{TIMEOUT_ENV: "2"}),
                          timeout=STARTUP_S + 120, cwd=REPO)
    lines = done.stdout.splitlines()
    assert lines[0].startswith(f"ERROR --address {address}: cannot connect to the Ray cluster"), done.stdout
    elapsed = float(lines[-1].split()[1])
    assert elapsed < 2 + RAY_EXTRA_S + 15, f"took {elapsed:.1f} s"  # + importing Ray on a loaded machine
    assert len(lines) == 2  # one line of error


def test_ray_connection_settings_leave_the_users_own_alone(monkeypatch):
    from probseg_bench.connections import environment, ray_connect_settings

    monkeypatch.setenv(TIMEOUT_ENV, "3")
    monkeypatch.delenv("RAY_gcs_server_port_wait_time_s", raising=False)
    monkeypatch.setenv("RAY_py_gcs_connect_timeout_s", "99")
    assert ray_connect_settings() == {"RAY_gcs_server_port_wait_time_s": "1",  # one attempt, not 20
                                      "RAY_CLIENT_INITIAL_CONNECTION_TIMEOUT_S": "1",  # ray://: 3 attempts of 3 s / 3
                                      "RAY_CLIENT_MAX_CONNECTION_TIMEOUT_S": "1"}
    with environment(ray_connect_settings()):
        assert os.environ["RAY_gcs_server_port_wait_time_s"] == "1"
    assert "RAY_gcs_server_port_wait_time_s" not in os.environ  # restored: a later local cluster is not affected


def test_a_malformed_ray_address_is_named():
    pytest.importorskip("ray", reason=NEEDS_RAY)
    from probseg_bench.connections import ray_target

    with pytest.raises(ProbsegError, match=r"^--address nohost: expected HOST:PORT"):
        ray_target("nohost")
    with pytest.raises(ProbsegError, match=r"^--address h:99999: expected HOST:PORT \(a port in 1\.\.65535\)"):
        ray_target("h:99999")
    assert ray_target("ray://head.example") == ("head.example", 10001)


# --------------------------------------------------------------------------------------------------------------
# item 4: ASCII stand-ins


def _source_characters() -> set[str]:
    """Every non-ASCII character in the package's and the plugins' source and packaged data: what the CLI can print
    of its own (help, tables, notes, errors, reference values)."""
    chars: set[str] = set()
    for folder in (REPO / "probseg_bench", REPO / "plugins"):
        for path in [*folder.rglob("*.py"), *folder.rglob("*.json"), *folder.rglob("*.toml")]:
            chars |= {ch for ch in path.read_text(encoding="utf-8") if not ch.isascii()}
    return chars


def test_every_character_the_suite_prints_has_a_readable_ascii_stand_in():
    chars = _source_characters() | set(ASCII_FALLBACKS) | set("┏━┳┓┃╇│└─┘┡┩╭╮╰╯…")  # + rich's boxes, ellipsis
    assert {"±", "↓", "↑", "Δ", "−", "†"} <= chars
    for ch in sorted(chars):
        stand_in = ascii_fallback(ch)
        assert stand_in.isascii() and "\\" not in stand_in, (ch, stand_in)
    assert to_ascii("EWD ↓ 0.451 ± 0.001, Δ −0.30 †") == "EWD (lower) 0.451 +- 0.001, delta -0.30 *"
    assert ascii_fallback("中") == "\\u4e2d"  # not the suite's own: escaped, not lost


def test_an_ascii_stream_writes_stand_ins_and_undecodable_file_name_bytes():
    for errors in ("strict", "surrogateescape"):
        raw = io.BytesIO()
        stream = io.TextIOWrapper(raw, encoding="ascii", errors=errors)
        use_ascii_fallbacks(stream)
        stream.write("0.451 ± 0.001 ↓ caf\udce9\n")
        stream.flush()
        assert raw.getvalue() == b"0.451 +- 0.001 (lower) caf\xe9\n"
    latin = io.BytesIO()
    stream = io.TextIOWrapper(latin, encoding="latin-1")
    use_ascii_fallbacks(stream)
    stream.write("± ↓\n")
    stream.flush()
    assert latin.getvalue() == b"\xb1 (lower)\n"  # what latin-1 has is written as such


@pytest.fixture
def main_on(monkeypatch: pytest.MonkeyPatch) -> Callable[..., tuple[int, bytes, bytes]]:
    """The console entry point in-process on stdout / stderr of a given encoding (default ASCII, ``strict``):
    ``main_on(*args) -> (exit code, stdout bytes, stderr bytes)``."""
    from probseg_bench.cli import main

    def run(*args: str, encoding: str = "ascii", errors: str = "strict") -> tuple[int, bytes, bytes]:
        out, err = io.BytesIO(), io.BytesIO()
        monkeypatch.setattr(sys, "stdout", io.TextIOWrapper(out, encoding=encoding, errors=errors, write_through=True))
        monkeypatch.setattr(sys, "stderr", io.TextIOWrapper(err, encoding=encoding, errors=errors, write_through=True))
        monkeypatch.setattr(sys, "argv", ["probseg-bench", *args])
        with pytest.raises(SystemExit) as exit_info:
            main()
        sys.stdout.flush()
        sys.stderr.flush()
        return int(exit_info.value.code or 0), out.getvalue(), err.getvalue()

    return run


@pytest.fixture(scope="module")
def ascii_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, int, bytes, bytes]:
    """The issue's ``run`` on an ASCII terminal (a subprocess, PYTHONIOENCODING=ascii): (store, code, out, err)."""
    folder = tmp_path_factory.mktemp("ascii-run")
    store = folder / "results.db"
    code, out, err, _ = _cli(["run", "--model", "punet", *T, "--storage", str(store), "--run-dir",
                              str(folder / "runs")], {"PYTHONIOENCODING": "ascii"})
    return store, code, out, err


def test_run_ends_with_its_summary_and_leaderboard_on_an_ascii_terminal(ascii_run):
    _, code, out, err = ascii_run
    assert code == 0, err.decode(errors="replace")
    assert out.isascii() and err.isascii()
    assert b"UnicodeEncodeError" not in err and b"done in " in err  # the summary is printed, not lost
    assert b"EWD (lower)" in out and b"HM-IoU (higher)" in out and b"mean +- std over folds" in out
    box = [line for line in out.decode().splitlines() if line[:1] in "+|"]
    assert len(box) >= 5 and len({len(line) for line in box}) == 1  # rich's ASCII box, every row aligned


@pytest.mark.parametrize("args", [
    ["--format", "table"], ["--format", "markdown"], ["--format", "csv"], ["--format", "json"],
    ["--format", "latex"], ["--pivot"], ["--format", "markdown", "--pivot"],
    ["--reference", "paper", "--reference", "literature"],
])
@pytest.mark.parametrize("errors", ["strict", "surrogateescape"])
def test_the_leaderboard_in_every_format_on_an_ascii_stream(ascii_run, main_on, args, errors):
    store = ascii_run[0]
    code, out, err = main_on("leaderboard", "--storage", str(store), *args, errors=errors)
    assert code == 0, err
    assert out.isascii() and err.isascii() and b"punet" in out
    if args in (["--format", "table"], ["--format", "markdown"]):
        assert b"EWD (lower)" in out
    if "--reference" in args:
        assert b"delta = measured - paper" in out  # the notes' Delta and minus sign


def test_the_leaderboard_on_the_c_locale_without_utf8(ascii_run):
    """The strictest terminal (:data:`C_LOCALE`): stdout ASCII with surrogateescape."""
    code, out, err, _ = _cli(["leaderboard", "--storage", str(ascii_run[0])], C_LOCALE)
    assert code == 0, err
    assert out.isascii() and b"EWD (lower)" in out


def test_an_error_line_naming_a_non_ascii_path_is_one_ascii_line(main_on, tmp_path):
    code, out, err = main_on("leaderboard", "--storage", str(tmp_path / "résultats.db"))
    assert code == 2 and out == b""
    assert err.decode("ascii").splitlines() == [
        f"error: --storage '{tmp_path}/resultats.db': no results store at {tmp_path}/resultats.db (nothing was run "
        "into it; check the path or the working directory)"]


def _commands() -> list[list[str]]:
    """Every command and command group of the CLI, as argument lists (the root: [])."""
    import typer

    from probseg_bench.cli import app

    def walk(cmd: object, path: list[str]) -> list[list[str]]:
        out = [path]
        for name, sub in sorted(getattr(cmd, "commands", {}).items()):  # a group's subcommands
            out += walk(sub, [*path, name])
        return out

    return walk(typer.main.get_command(app), [])


def test_every_commands_help_is_ascii(main_on):
    """click writes help to an ASCII stream as UTF-8 (it treats ASCII as a misconfiguration): help texts are
    ASCII at their source."""
    commands = _commands()
    assert ["run"] in commands and ["data", "inspect"] in commands
    for command in commands:
        code, out, err = main_on(*command, "--help")
        assert code == 0, (command, err)
        assert out.isascii(), (command, [ch for ch in out.decode() if not ch.isascii()])


def test_a_rich_table_of_the_cli_stays_aligned_on_an_ascii_stream():
    from rich.table import Table

    from probseg_bench.cli._app import PortableConsole

    raw = io.BytesIO()
    console = PortableConsole(file=io.TextIOWrapper(raw, encoding="ascii", write_through=True), width=80)
    table = Table(title="paired comparison: EWD ↓, difference = A − B", caption="†: see below")
    for col in ("model", "EWD ↓", "ER"):
        table.add_column(col)
    table.add_row("punet", "0.451 ± 0.001", "1.68 †")
    console.print(table)
    text = raw.getvalue().decode("ascii")
    assert "EWD (lower)" in text and "0.451 +- 0.001" in text and "A - B" in text and "1.68 *" in text
    box = [line for line in text.splitlines() if line[:1] in "+|"]
    assert len(box) == 5 and len({len(line) for line in box}) == 1


# ASCII source (escapes): under the C locale a command line must be ASCII
_C_LOCALE_FILES = """
import sys
from pathlib import Path
from probseg_bench.atomic import atomic_write_text
from probseg_bench.errors import ProbsegError
from probseg_bench.tuning import read_params
folder = Path(sys.argv[1])
atomic_write_text(folder / "report.html", "<p>prior \\u03c3, EWD \\u2193, 0.4 \\u00b1 0.1</p>")
toml = "# tuned: EWD \\u2193, \\u03b2 \\u00b1 10\\n[hyperparameters]\\nbeta = 2.0\\n"
(folder / "params.toml").write_bytes(toml.encode())
print(read_params(folder / "params.toml").hyperparameters)
(folder / "latin.toml").write_bytes("# \\xb1\\n[hyperparameters]\\nbeta = 2.0\\n".encode("latin-1"))
try:
    read_params(folder / "latin.toml")
except ProbsegError as exc:
    print("ERROR", exc)
"""


def test_files_are_utf8_whatever_the_locale(tmp_path):
    """Under the C locale without UTF-8 mode Python's default file encoding is ASCII: files the suite writes and
    the TOML it reads are UTF-8 all the same; a TOML file that is not UTF-8 is one line."""
    done = subprocess.run([sys.executable, "-c", _C_LOCALE_FILES, str(tmp_path)], capture_output=True, text=True,
                          env=_env(**C_LOCALE), timeout=120, cwd=REPO)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "report.html").read_bytes() == "<p>prior σ, EWD ↓, 0.4 ± 0.1</p>".encode()
    assert done.stdout.splitlines() == [
        "{'beta': 2.0}", f"ERROR {tmp_path}/latin.toml: not UTF-8 text at byte 2 (a TOML file is UTF-8)"]
