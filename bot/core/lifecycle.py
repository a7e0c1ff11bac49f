"""Process lifecycle: who owns a job (and whether that process still lives), children that die with their
parent, and telling what already serves a port."""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import json
import logging
import os
import signal
import socket
import sys
from dataclasses import dataclass
from urllib.error import URLError
from urllib.request import urlopen

import psutil

log = logging.getLogger(__name__)

PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>


@dataclass(frozen=True, slots=True)
class ProcessOwner:
    """A process that owns unfinished jobs: its role, pid and start time (so a reused pid is not it)."""

    kind: str  # "bot" or "cli"
    pid: int
    started: float

    def __str__(self) -> str:
        return f"{self.kind}:{self.pid}:{self.started:.2f}"

    @classmethod
    def parse(cls, text: str | None) -> ProcessOwner | None:
        """The owner stored with a job; None for rows from before owners were recorded."""
        if not text:
            return None
        try:
            kind, pid, started = text.split(":")
            return cls(kind, int(pid), float(started))
        except ValueError:
            return None

    @classmethod
    def current(cls, kind: str) -> ProcessOwner:
        return cls(kind, os.getpid(), _start_time(os.getpid()) or 0.0)

    def alive(self) -> bool:
        """Whether this very process still runs (same pid and the same start time)."""
        started = _start_time(self.pid)
        return started is not None and abs(started - self.started) < 0.05


def _start_time(pid: int) -> float | None:
    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return None
        return round(proc.create_time(), 2)
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None


def die_with_parent() -> None:
    """For `preexec_fn`: on Linux the child gets SIGTERM when its parent dies, even by SIGKILL.

    Elsewhere this does nothing; the worker's own parent watch (`--parent-pid`) covers it.
    """
    parent = os.getppid()
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    if os.getppid() != parent:  # the parent died before the line above: nobody would signal us
        os._exit(1)


def port_in_use(host: str, port: int) -> bool:
    """Whether something accepts connections on host:port."""
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=1.0):
        return True
    return False


def describe_server(host: str, port: int) -> str:
    """What answers on host:port, in words for an operator: a brushfire worker (and its model) or not."""
    base = f"http://{host if ':' not in host else f'[{host}]'}:{port}"
    try:
        with urlopen(f"{base}/v1/info", timeout=2.0) as resp:
            info = json.loads(resp.read(64 * 1024))
        return f"a brushfire worker serving {info.get('model', 'an unknown model')!r}"
    except URLError as exc:
        reason = getattr(exc, "code", None)
        if reason == 401:
            return "a brushfire worker that wants a token (or another HTTP server)"
        return f"a program that does not speak brushfire's RPC ({exc.reason})"
    except (OSError, ValueError) as exc:
        return f"a program that does not speak brushfire's RPC ({type(exc).__name__})"


@dataclass(frozen=True, slots=True)
class CrashPoint:
    """TEST-ONLY fault hook for the crash matrix (tests/hostile, bench/hostile.py); inert unless set.

    When a job reaches `phase` (queued, running, images_ready, commit, delivery), SIGKILL the processes
    in `pids` (this process when empty) at that exact point: a kill -9 at each phase of a job, without
    racing a timer. run.py builds it from BRUSHFIRE_TEST_KILL_AT and BRUSHFIRE_TEST_KILL_PIDS.
    """

    phase: str | None = None
    pids: tuple[int, ...] = ()

    @classmethod
    def from_env(cls, environ: dict[str, str]) -> CrashPoint:
        phase = environ.get("BRUSHFIRE_TEST_KILL_AT") or None
        pids = tuple(int(p) for p in environ.get("BRUSHFIRE_TEST_KILL_PIDS", "").split(",") if p.strip())
        return cls(phase, pids)

    def reached(self, phase: str) -> None:
        if phase != self.phase:
            return
        log.warning("TEST crash point %s reached: killing %s", phase, self.pids or "this process")
        for pid in self.pids or (os.getpid(),):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
