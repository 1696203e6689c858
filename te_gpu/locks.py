"""A lock file: one run at a time on a checkpoint, a feature store or an output folder.

:func:`exclusive_lock` creates the lock with O_CREAT | O_EXCL and writes who holds it
(pid, host, time, the process's start time), so a second run is refused with a
:class:`LockError` that names the holder, and a lock left by a dead run on this host
is taken over with a :class:`StaleLockWarning`.
"""
from __future__ import annotations

import json
import os
import socket
import time
import uuid
import warnings
from contextlib import contextmanager
from pathlib import Path

__all__ = ["exclusive_lock", "LockError", "StaleLockWarning"]



class LockError(RuntimeError):
    """The lock is held by another run that is (or may be) still running."""


class StaleLockWarning(UserWarning):
    """A lock left by a run that is no longer running was taken over."""


# an empty lock is one being written (create, then write); only a crash in that
# instant leaves it empty, so after this long it is taken for stale
_EMPTY_LOCK_GRACE_S = 60.0


def _process_start(pid: int):
    """Start time of ``pid`` (Linux clock ticks since boot) or None where unknown.

    A pid is reused once its process is gone; its start time tells the run that
    wrote a lock from an unrelated process that later got the same pid.
    """
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            return int(fh.read().rsplit(b")", 1)[1].split()[19])
    except (OSError, ValueError, IndexError):
        return None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    except (OverflowError, ValueError):
        return False
    return True


def _holder_is_dead(holder: dict) -> bool:
    """True only when the lock's run is certainly gone: same host, pid dead or reused."""
    if holder.get("host") != socket.gethostname():
        return False
    pid = holder.get("pid")
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:
        return False
    if not _pid_alive(pid):
        return True
    start, now = holder.get("start"), _process_start(pid)
    return start is not None and now is not None and start != now


def _describe_holder(holder: dict) -> str:
    since = holder.get("time")
    when = "?"
    if isinstance(since, (int, float)):
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(since))
    return f"pid {holder.get('pid')} on {holder.get('host')}, since {when}"


def _read_lock(lock: Path):
    """(raw text, holder dict or None). None: empty or unparsable (being written)."""
    try:
        text = lock.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None, None
    try:
        holder = json.loads(text)
    except ValueError:
        return text, None
    return text, holder if isinstance(holder, dict) else None


def _take_over(lock: Path, seen: str) -> None:
    """Remove the stale lock whose text is ``seen``, never a live one.

    The lock is renamed aside first (atomic: of two runs taking it over, one gets
    it) and its text compared with what was judged stale; if another run has
    replaced it meanwhile, it is put back.
    """
    aside = lock.with_name(f"{lock.name}.{uuid.uuid4().hex}.stale")
    try:
        os.rename(lock, aside)
    except FileNotFoundError:
        return
    try:
        if aside.read_text(encoding="utf-8") != seen:
            try:
                os.link(aside, lock)
            except FileExistsError:
                pass
    finally:
        aside.unlink(missing_ok=True)


def _acquire(lock: Path, what: str) -> str:
    mine = json.dumps(dict(pid=os.getpid(), host=socket.gethostname(), time=time.time(),
                           start=_process_start(os.getpid())))
    for _ in range(5):
        try:
            fd = os.open(lock, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            text, holder = _read_lock(lock)
            if text is None:
                continue  # released meanwhile: try again
            if holder is None:
                try:
                    age = time.time() - lock.stat().st_mtime
                except FileNotFoundError:
                    continue
                if age < _EMPTY_LOCK_GRACE_S:
                    raise LockError(f"{what} is in use: {lock} is being taken by another run") from None
                warnings.warn(f"{lock}: taking over an unreadable lock {age:.0f} s old", StaleLockWarning,
                              stacklevel=4)
            elif _holder_is_dead(holder):
                warnings.warn(f"{lock}: taking over the lock of a run that is no longer running "
                              f"({_describe_holder(holder)})", StaleLockWarning, stacklevel=4)
            else:
                raise LockError(f"{what} is in use by another run ({_describe_holder(holder)}); wait "
                                f"for it to end, or delete {lock} if that run is gone") from None
            _take_over(lock, text)
            continue
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(mine)
            fh.flush()
            os.fsync(fh.fileno())
        return mine
    raise LockError(f"{what} is in use: could not take {lock} (other runs keep taking it)")


@contextmanager
def exclusive_lock(path, what: str | None = None, wait: float = 0.0):
    """Hold the lock file ``path`` (created with O_CREAT | O_EXCL) for the ``with`` block.

    It holds the pid, host name, time and process start time of its run. A second
    run raises :class:`LockError` naming the holder, after retrying for up to ``wait``
    seconds (for locks held only for a moment, such as a file's read-modify-write); a
    lock whose run is dead on this host (pid gone, or reused by another process) is
    taken over with a :class:`StaleLockWarning`. A lock from another host is never
    taken over.
    """
    lock = Path(path)
    what = what or str(lock)
    if not lock.parent.is_dir():
        raise FileNotFoundError(f"cannot lock {what}: folder {lock.parent} does not exist")
    deadline = time.monotonic() + wait
    while True:
        try:
            mine = _acquire(lock, what)
            break
        except LockError:
            if time.monotonic() >= deadline:
                raise
            time.sleep(0.05)
    try:
        yield lock
    finally:
        if _read_lock(lock)[0] == mine:  # never remove a lock another run has taken over
            lock.unlink(missing_ok=True)
