"""Helpers to drive real ``sngan`` processes: the console script installed by scripts/setup,
a temporary data directory (SQLite + filesystem broker) and a free port on 127.0.0.1."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

from tests.stacks import SNGAN


def sngan_env(data_dir: Path, **extra: str) -> dict[str, str]:
    """The environment without any SNGAN_ setting of the caller's, pointed at ``data_dir``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SNGAN_")}
    env.update(SNGAN_DATA_DIR=str(data_dir), PYTHONUNBUFFERED="1", NO_COLOR="1")
    env.update(extra)
    return env


def run_sngan(
    *args: str, env: dict[str, str], cwd: Path, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    assert SNGAN.exists(), f"{SNGAN} is missing: run ./scripts/setup"
    return subprocess.run(
        [str(SNGAN), *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


def descendants(pid: int) -> set[int]:
    """Every live process below ``pid`` (read from /proc)."""
    parent_of: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # "pid (comm) state ppid ...": comm may hold spaces, so split after the last ')'
        fields = stat.rsplit(")", 1)[1].split()
        if fields[0] != "Z":
            parent_of[int(entry.name)] = int(fields[1])
    found: set[int] = set()
    frontier = {pid}
    while frontier:
        frontier = {child for child, parent in parent_of.items() if parent in frontier}
        found |= frontier
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


class Server:
    """``sngan serve`` as a subprocess in its own session, its output in a log file."""

    def __init__(
        self, workdir: Path, env: dict[str, str], port: int, args: tuple[str, ...] = ()
    ) -> None:
        self.workdir, self.env, self.port, self.args = workdir, env, port, args
        self.url = f"http://127.0.0.1:{port}"
        self.log_path = workdir / f"serve-{port}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self, timeout: float = 90.0) -> None:
        self.starts += 1
        log = self.log_path.open("ab")
        log.write(f"--- start {self.starts} ---\n".encode())
        log.flush()
        self.proc = subprocess.Popen(
            [str(SNGAN), "serve", "--port", str(self.port), *self.args],
            env=self.env,
            cwd=self.workdir,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"sngan serve exited with {self.proc.returncode}:\n{self.log()}")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.3)
        pytest.fail(f"sngan serve did not answer /healthz in {timeout} s:\n{self.log()}")

    def stop(self, sig: int = signal.SIGINT, timeout: float = 60.0) -> int:
        assert self.proc is not None
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
            pytest.fail(f"sngan serve did not stop within {timeout} s:\n{self.log()}")

    def kill(self) -> None:
        """Last resort for a failed test: the whole session it was started in."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-6000:]


def write_npz(path: Path, n: int = 64, size: int = 32) -> Path:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(n, size, size, 3), dtype=np.uint8)
    labels = rng.integers(0, 4, size=n)
    np.savez(path, images=images, labels=labels)
    return path
