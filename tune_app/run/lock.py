"""One driver per run directory: the ``driver.lock`` file names its owner.

A driver takes the lock before it touches a run directory (a new run right after
creating it, a resume before anything starts) and releases it when it ends. A
second driver on the same run (``resume`` while the first is still alive) is
refused in one line. A lock whose owner is gone (killed: the lock is left
behind) is stale and taken over: on the same host the owner's pid is checked,
together with its process start time, so a recycled pid does not count as alive.
A lock held from another host cannot be checked from here; the message says
which file to delete once that driver is known to be gone.
"""

from __future__ import annotations

import json
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tune_app.errors import ConfigError

LOCK = "driver.lock"


def _start_time(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (Linux), or None."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]  # field 22 of stat(5)


def _owner() -> dict[str, Any]:
    pid = os.getpid()
    return {"pid": pid, "host": socket.gethostname(), "start": _start_time(pid), "at": time.time()}


def _alive(owner: dict[str, Any]) -> bool:
    """Whether the driver that wrote ``owner`` may still be running."""
    if owner.get("host") != socket.gethostname():
        return True  # cannot tell from here
    pid = int(owner.get("pid", -1))
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # alive, owned by another user
    start = owner.get("start")
    return start is None or _start_time(pid) in (None, start)


@dataclass
class RunLock:
    """A held lock; :meth:`release` removes it."""

    path: Path

    def release(self) -> None:
        """Give the run directory up (only if this process still holds it)."""
        try:
            if json.loads(self.path.read_text()).get("pid") == os.getpid():
                self.path.unlink()
        except (OSError, ValueError):
            pass


def acquire(run_dir: Path) -> RunLock:
    """Take ``run_dir``'s lock; a :class:`ConfigError` if a live driver holds it."""
    path = Path(run_dir) / LOCK
    for _ in range(3):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            try:
                owner = json.loads(path.read_text())
            except (OSError, ValueError):
                owner = {}  # half-written by a driver killed mid-write: stale
            if owner and _alive(owner):
                where = (
                    f"pid {owner.get('pid')}"
                    if owner.get("host") == socket.gethostname()
                    else f"pid {owner.get('pid')} on host {owner.get('host')}"
                )
                raise ConfigError(
                    f"{run_dir} is in use by another driver ({where}); wait for it to "
                    f"finish or stop it, then resume (if it is gone, delete {path})"
                ) from None
            path.unlink(missing_ok=True)  # stale: its driver is gone
            continue
        with os.fdopen(fd, "w") as fh:
            json.dump(_owner(), fh)
        return RunLock(path)
    raise ConfigError(f"could not lock {run_dir}: another driver keeps taking it; try again")
