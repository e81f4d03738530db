"""Starting and stopping local server processes, written once for the stack, the
benchmark and the tests: free loopback ports, the start-failure error, and stopping a
process (and its workers, its process group) by PID.

Each process runs in a session of its own, known by PID and kernel start time, so
that stopping one never hits a recycled PID, and a server's workers go with it."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HOST = "127.0.0.1"
START_TIMEOUT_S = 90.0
STOP_TIMEOUT_S = 30.0  # gunicorn's --graceful-timeout is 20 s


class ServerFailed(RuntimeError):
    """A process we started did not come up, or exited; the message carries its log."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def group_alive(pgid: int) -> bool:
    """Is any process of group ``pgid`` left (zombies included: not yet reaped)?"""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def stop_group(popen: subprocess.Popen[Any], timeout: float = STOP_TIMEOUT_S) -> None:
    """SIGTERM the session leader ``popen`` (started with ``start_new_session``) and
    wait for a graceful exit; SIGKILL its process group if anything lingers."""
    pid = popen.pid  # also the process group id
    if popen.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            popen.wait(timeout=timeout)
    deadline = time.monotonic() + 5.0
    while group_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    if group_alive(pid):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)
    popen.wait(timeout=timeout)


def _stat(pid: int) -> list[str] | None:
    """The fields of /proc/PID/stat after the command name; None if it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()


def start_time_of(pid: int) -> int | None:
    """The kernel's start time of ``pid`` (clock ticks since boot); None if gone or a zombie."""
    fields = _stat(pid)
    if fields is None or fields[0] == "Z":
        return None
    return int(fields[19])


def group_members(pgid: int) -> list[int]:
    """Live (not zombie) processes of process group ``pgid``: a server and its workers.
    A zombie has already closed its sockets and freed its memory."""
    members = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            fields = _stat(int(entry.name))
            if fields is not None and fields[0] != "Z" and int(fields[2]) == pgid:
                members.append(int(entry.name))
    return members


@dataclass
class Proc:
    """One process the stack started, known by PID and start time."""

    name: str
    pid: int
    start_time: int
    log: Path
    popen: subprocess.Popen[bytes] | None = field(default=None, repr=False, compare=False)

    def alive(self) -> bool:
        if self.popen is not None and self.popen.poll() is not None:
            return False
        return start_time_of(self.pid) == self.start_time

    def signal(self, signum: int) -> None:
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signum)

    def _group_alive(self) -> bool:
        """Anything left of the session this process leads (its pgid is its PID)?"""
        return bool(group_members(self.pid))

    def wait(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while self.alive():
            if time.monotonic() > deadline:
                return False
            time.sleep(0.05)
        return True

    def kill_group(self) -> None:
        """SIGKILL the process and its group (its workers), as a crash would; return once
        every one of them is gone."""
        if self.alive() or self._group_alive():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.pid, signal.SIGKILL)
        if self.popen is not None:
            self.popen.wait(timeout=STOP_TIMEOUT_S)
        else:
            self.wait(STOP_TIMEOUT_S)
        deadline = time.monotonic() + STOP_TIMEOUT_S
        while self._group_alive() and time.monotonic() < deadline:
            time.sleep(0.005)

    def stop(self) -> None:
        """SIGTERM, wait for a graceful exit; SIGKILL the group if anything lingers."""
        self.signal(signal.SIGTERM)
        self.wait(STOP_TIMEOUT_S)
        deadline = time.monotonic() + 5.0
        while self._group_alive() and time.monotonic() < deadline:
            time.sleep(0.05)
        self.kill_group()

    def as_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "pid": self.pid,
            "start_time": self.start_time,
            "log": str(self.log),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Proc:
        return cls(data["name"], int(data["pid"]), int(data["start_time"]), Path(data["log"]))


def spawn(
    name: str,
    argv: Sequence[str],
    *,
    env: Mapping[str, str],
    cwd: Path,
    log: Path,
    pid_dir: Path,
) -> Proc:
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        popen = subprocess.Popen(  # noqa: S603 - fixed argv built here, no shell
            list(argv),
            cwd=cwd,
            env=dict(env),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    started = None
    for _ in range(100):
        started = start_time_of(popen.pid)
        if started is not None or popen.poll() is not None:
            break
        time.sleep(0.01)
    proc = Proc(name, popen.pid, started or 0, log, popen)
    pid_dir.mkdir(parents=True, exist_ok=True)
    (pid_dir / f"{name}.pid").write_text(f"{popen.pid}\n")
    return proc


def tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def wait_for(proc: Proc, ready: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while not ready():
        if not proc.alive():
            raise ServerFailed(f"{proc.name} exited while starting:\n{tail(proc.log)}")
        if time.monotonic() > deadline:
            raise ServerFailed(
                f"{proc.name}: {what} not ready in {START_TIMEOUT_S}s:\n{tail(proc.log)}"
            )
        time.sleep(0.1)


def http_ok(url: str, context: ssl.SSLContext | None = None) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2.0, context=context) as answer:  # noqa: S310 - our own loopback URL
            return int(answer.status) == 200
    except (urllib.error.URLError, OSError):
        return False


def redis_ping(port: int) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=1.0) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


def find_binary(name: str, debian: str) -> str:
    if os.access(debian, os.X_OK):
        return debian
    found = shutil.which(name)
    if found is None:
        raise ServerFailed(f"{name} not found (run `make system-deps`)")
    return found
