"""Background processes of the local stack: pid files, start, readiness waits, stop without orphans."""

from __future__ import annotations

import contextlib
import os
import random
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from clickstream_dagster.clients.net import port_open


class StackError(RuntimeError):
    """A component could not be started or reached; the message says what to do next."""


@dataclass(frozen=True)
class ManagedProcess:
    """A long-running process started by the stack, tracked by `<run_dir>/<name>.pid`."""

    name: str
    run_dir: Path
    log_dir: Path

    @property
    def pid_file(self) -> Path:
        return self.run_dir / f"{self.name}.pid"

    @property
    def log_file(self) -> Path:
        return self.log_dir / f"{self.name}.log"

    def pid(self) -> int | None:
        """The recorded pid if that process is still alive; a stale pid file is removed."""
        try:
            pid = int(self.pid_file.read_text().split()[0])
        except (FileNotFoundError, ValueError, IndexError):
            return None
        if pid_alive(pid):
            return pid
        self.pid_file.unlink(missing_ok=True)
        return None

    def running(self) -> bool:
        return self.pid() is not None

    def start(self, argv: Sequence[str], env: Mapping[str, str], cwd: Path | None = None) -> int:
        if (pid := self.pid()) is not None:
            return pid
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        with self.log_file.open("ab") as log:
            log.write(f"\n==== {time.strftime('%Y-%m-%d %H:%M:%S')} starting: {' '.join(argv)}\n".encode())
            log.flush()
            proc = subprocess.Popen(
                list(argv),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=dict(env),
                cwd=str(cwd) if cwd else None,
                start_new_session=True,  # own process group: `stop` takes its children with it
            )
        self.pid_file.write_text(f"{proc.pid}\n")
        return proc.pid

    def stop(self, timeout: float = 20.0) -> bool:
        """Stop the process and its whole process group. Returns True if something was running."""
        pid = self.pid()
        if pid is None:
            return False
        kill_group(pid, timeout)
        self.pid_file.unlink(missing_ok=True)
        return True

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_file.read_text(errors="replace")
        except FileNotFoundError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie (exited child not yet reaped) counts as dead.
    with contextlib.suppress(OSError):
        stat = Path(f"/proc/{pid}/stat").read_text()
        if stat.rsplit(")", 1)[1].split()[0] == "Z":
            if len(list(Path(f"/proc/{pid}/task").iterdir())) > 1:
                return True  # the main thread exited but the process (e.g. a JVM) still runs
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)
            return False
    return True


def kill_group(pid: int, timeout: float) -> None:
    """SIGTERM the process group led by `pid`, wait, then SIGKILL whatever is left."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, sig)
        deadline = time.monotonic() + (timeout if sig == signal.SIGTERM else 5.0)
        while time.monotonic() < deadline:
            if not pid_alive(pid) and not group_alive(pid):
                return
            time.sleep(0.1)


def group_alive(pgid: int) -> bool:
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if fields[0] != "Z" and int(fields[2]) == pgid:
            return True
    return False


def ensure_port_free(host: str, port: int, what: str, env_var: str) -> None:
    if port_open(host, port):
        raise StackError(
            f"port {port} on {host} is already in use, so {what} cannot start there: "
            f"stop whatever listens on it (`ss -ltnp 'sport = :{port}'`) or choose another port with {env_var}"
        )


_HANDED_OUT: set[int] = set()  # ports free_port returned in this process (their servers may not be up yet)
_EPHEMERAL_DEFAULT = (32768, 60999)  # Linux's default ip_local_port_range


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return _EPHEMERAL_DEFAULT[0]


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing is bound to, chosen below the kernel's ephemeral range. Client sockets take their local
    ports from that range, so a port picked there (as `bind(0)` would) can be taken by any outgoing
    connection before the server meant for it binds it (seen in CI: a test stack's API port, a minute after
    it was chosen). Never the same port twice in one process."""
    high = max(_ephemeral_low(), 2048)
    low = max(1024, high - 12_000)
    for _ in range(1_000):
        port = random.randrange(low, high)
        if port in _HANDED_OUT:
            continue
        with socket.socket() as s:
            try:
                s.bind((host, port))
            except OSError:
                continue
        _HANDED_OUT.add(port)
        return port
    raise StackError(f"no free port on {host} between {low} and {high}")


def wait_until(
    check: Callable[[], bool],
    timeout: float,
    what: str,
    alive: Callable[[], bool] | None = None,
    on_fail: Callable[[], str] | None = None,
    interval: float = 0.2,
) -> None:
    """Poll `check` until it holds; fail fast if the process died, with its log tail when given."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        if alive is not None and not alive():
            detail = on_fail() if on_fail else ""
            raise StackError(f"{what} exited during start-up.\n{detail}")
        time.sleep(interval)
    detail = on_fail() if on_fail else ""
    raise StackError(f"{what} was not ready after {timeout:.0f} s.\n{detail}")
