"""A real PostgreSQL server for the test suite, as tests/redis_rig.py runs redis-server.

initdb and pg_ctl (from PATH, else Debian's /usr/lib/postgresql/<version>/bin) make a cluster
in a temp directory (data and socket), started on a free 127.0.0.1 port with trust auth, and
stopped (pg_ctl stop, which signals the server by the PID in its own data directory) and
removed at the end. PostgreSQL refuses to run as root: as root, the server runs as the
`postgres` user the Debian package creates (else `nobody`), owning the temp directory.
A missing binary fails the test, never skips it.
"""

from __future__ import annotations

import atexit
import contextlib
import glob
import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import pytest

from tests.redis_rig import HOST, free_port

MISSING = "PostgreSQL is missing: apt-get install -y postgresql"
START_TIMEOUT = 30  # seconds for pg_ctl start -w
SUPERUSER = "postgres"

_LIVE: dict[Path, PostgresServer] = {}


def _stop_leftovers() -> None:
    for server in list(_LIVE.values()):
        server.close()


atexit.register(_stop_leftovers)


def binary(name: str) -> str:
    """A PostgreSQL program: on PATH, else the newest Debian version's."""
    found = shutil.which(name)
    if found is None:
        candidates = sorted(
            glob.glob(f"/usr/lib/postgresql/*/bin/{name}"),
            key=lambda path: int(Path(path).parts[-3]) if Path(path).parts[-3].isdigit() else 0,
        )
        found = candidates[-1] if candidates else None
    if found is None:
        pytest.fail(MISSING, pytrace=False)
    return found


def _run_as() -> dict[str, Any]:
    """Popen options that drop root for the server's own user; none when not root."""
    if os.geteuid() != 0:
        return {}
    for name in ("postgres", "nobody"):
        with contextlib.suppress(KeyError):
            user = pwd.getpwnam(name)
            return {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []}
    pytest.fail(
        "running as root, with neither a postgres nor a nobody user to run PostgreSQL as", pytrace=False
    )


class PostgresServer:
    """One PostgreSQL cluster on 127.0.0.1 in a temp dir, fsync off (tests never kill it)."""

    def __init__(self) -> None:
        self._initdb, self._pg_ctl = binary("initdb"), binary("pg_ctl")
        self._as = _run_as()
        self._dir = Path(tempfile.mkdtemp(prefix="pg-rig-"))
        self.port = 0
        _LIVE[self._dir] = self
        if "user" in self._as:
            os.chown(self._dir, self._as["user"], self._as["group"])

    @property
    def data(self) -> Path:
        return self._dir / "data"

    @property
    def log_path(self) -> Path:
        return self._dir / "server.log"

    def dsn(self, database: str = "postgres") -> str:
        return f"postgresql://{SUPERUSER}@{HOST}:{self.port}/{database}"

    def start(self) -> PostgresServer:
        self._run(
            self._initdb, "-D", str(self.data), "-U", SUPERUSER, "--auth=trust",
            "--encoding=UTF8", "--locale=C", "--no-sync", "--no-instructions",
        )  # fmt: skip
        error = ""
        for _ in range(5):  # a port taken between free_port() and the server's bind: another one
            self.port = free_port()
            options = (
                f"-p {self.port} -k {self._dir} -c listen_addresses={HOST} -c fsync=off"
                " -c full_page_writes=off -c synchronous_commit=off"
            )
            done = self._run(
                self._pg_ctl, "start", "-w", "-t", str(START_TIMEOUT), "-D", str(self.data),
                "-l", str(self.log_path), "-o", options, check=False,
            )  # fmt: skip
            if done.returncode == 0:
                return self
            error = self.log_tail()
            if "already in use" not in error:
                break
        raise RuntimeError(f"PostgreSQL did not start:\n{error}")

    def create_database(self, name: str) -> str:
        """A new empty database; its connection string."""
        self._run(binary("psql"), "-X", "-q", "-h", HOST, "-p", str(self.port), "-U", SUPERUSER,
                  "-d", "postgres", "-c", f'CREATE DATABASE "{name}"')  # fmt: skip
        return self.dsn(name)

    def close(self) -> None:
        """Stop the server (fast: no checkpoint wait) and remove its directory."""
        if self.data.joinpath("postmaster.pid").exists():
            self._run(self._pg_ctl, "stop", "-D", str(self.data), "-m", "immediate", "-w", check=False)
        shutil.rmtree(self._dir, ignore_errors=True)
        _LIVE.pop(self._dir, None)

    def log_tail(self, limit: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-limit:]
        except OSError:
            return "(no log)"

    def _run(self, *argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            argv, cwd=self._dir, capture_output=True, text=True, timeout=60,
            env={**os.environ, "LC_ALL": "C"}, **self._as,
        )  # fmt: skip
        if check and done.returncode != 0:
            name = Path(argv[0]).name
            raise RuntimeError(f"{name} failed ({done.returncode}):\n{done.stderr}{done.stdout}")
        return done
