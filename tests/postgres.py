"""A throwaway PostgreSQL server for tests: Debian's `postgresql` package (`make postgres` installs it),
a cluster made by `initdb` in a temporary directory, `postgres` started on a free loopback port with
fsync off (the cluster dies with the test session), stopped and removed at the end.

PostgreSQL refuses to run as root: as root, the cluster belongs to the `postgres` user the package
creates, and its programs run as that user.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
from pathlib import Path

from llm_edge.launcher import free_port
from tests.infra import wait_until_serving

_SSL_REQUEST = struct.pack("!ii", 8, 80877103)


def _answers(sock: socket.socket) -> bool:
    """PostgreSQL's answer to an SSLRequest is one byte, `S` or `N`: it speaks its protocol."""
    sock.sendall(_SSL_REQUEST)
    return sock.recv(1) in (b"S", b"N")


def binaries() -> Path | None:
    """Where initdb and postgres are: on PATH, else Debian's versioned directory (newest first)."""
    if (initdb := shutil.which("initdb")) is not None:
        return Path(os.path.realpath(initdb)).parent
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                   key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0)
    return Path(found[-1]).parent if found else None


class PostgresServer:
    def __init__(self) -> None:
        bin_dir = binaries()
        if bin_dir is None:
            raise RuntimeError("PostgreSQL is not installed; `make postgres` (run by `make test`) installs it")
        self.bin = bin_dir
        self.port = free_port()
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        self.dir = Path(tempfile.mkdtemp(prefix="pg-test-"))
        self.user = "postgres" if os.geteuid() == 0 else None
        self.process: subprocess.Popen[bytes] | None = None

    def _own(self) -> None:
        if self.user is not None:
            entry = pwd.getpwnam(self.user)
            for path in [self.dir, *self.dir.rglob("*")]:
                os.chown(path, entry.pw_uid, entry.pw_gid)

    def start(self) -> None:
        data = self.dir / "data"
        if not data.exists():
            self._own()
            subprocess.run([str(self.bin / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust",
                            "-E", "UTF8", "--no-sync"], check=True, user=self.user,
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self.process = subprocess.Popen(
            [str(self.bin / "postgres"), "-D", str(data), "-p", str(self.port), "-k", str(self.dir),
             "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off", "-c", "full_page_writes=off"],
            user=self.user, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_until_serving(self.port, _answers, lambda: self.running)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)  # "fast" shutdown: open sessions are ended
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def database(self, name: str) -> str:
        """A new, empty database; its URL."""
        import psycopg

        with psycopg.connect(self.url, autocommit=True) as connection:
            connection.execute(f'CREATE DATABASE "{name}"')
        return f"postgresql://postgres@127.0.0.1:{self.port}/{name}"
