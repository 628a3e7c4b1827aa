"""What every benchmark prints beside its figures: versions, the machine, the load."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any


def commit(sources: str) -> str:
    """HEAD, and whether ``sources`` (a folder of the repository) differ from it: figures of a dirty tree say so."""
    root = Path(__file__).resolve().parent.parent
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True,
                              check=True).stdout.strip()
        dirty = subprocess.run(["git", "diff", "--quiet", "HEAD", "--", sources], cwd=root, check=False).returncode != 0
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + (f" + uncommitted changes in {sources}" if dirty else "")


def versions(*packages: str) -> dict[str, str]:
    """Python's version and each package's installed version."""
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for pkg in packages:
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = "not installed"
    return out


def machine() -> dict[str, Any]:
    mem = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem = round(int(line.split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    return {"cpus": os.cpu_count(), "memory_gib": mem, "platform": platform.platform()}


def load_average() -> float:
    """1-minute load average: other work on the machine shows up in every figure."""
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return -1.0


def free_port() -> int:
    """A free TCP port on 127.0.0.1 (the servers a benchmark starts bind there only)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def stop_process(proc: Any, *, timeout: float = 30.0) -> None:
    """SIGTERM a server started in its own process group, then SIGKILL the group if it has not exited in ``timeout``."""
    import signal
    import subprocess

    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def generator_dir(given: str | None) -> Path:
    """The monitoring peers' folder with the shared seeded generator (``gen_data.py``): ``given``, else
    ``shared/peers/monitoring`` beside the repository (or beside a worktree's parent)."""
    root = Path(__file__).resolve().parent.parent
    candidates = [Path(given)] if given else [root.parent / "shared" / "peers" / "monitoring",
                                              root.parents[1] / "shared" / "peers" / "monitoring"]
    for c in candidates:
        if (c / "gen_data.py").is_file():
            return c.resolve()
    sys.exit(f"gen_data.py not found in {[str(c) for c in candidates]}; pass --generator DIR")
