"""One zoo across processes, GPUs and machines with torch.distributed.

``score_zoo`` (and ``te-gpu score``) run in every process of a job started by
``torchrun`` or ``srun``; :func:`joined` gives each a :class:`World`:

* the process group already initialised by the caller, if there is one;
* else, when the torchrun environment is set (``RANK``, ``WORLD_SIZE``,
  ``MASTER_ADDR``, ``MASTER_PORT``), one initialised here - gloo on the CPU,
  gloo for objects plus NCCL for CUDA tensors on GPUs - and destroyed on the way out;
* else a world of one process, in which every collective is a plain call.

The ranks only talk at a few points (te_gpu's scores are per model; only the
small per-model results travel): each of those is one object collective over
gloo (never NCCL: objects live on the host, and gloo reports a dead peer at
once where NCCL would wait for its watchdog). :meth:`World.gather` and
:meth:`World.share` also carry exceptions: a rank whose part fails sends its
error, and every rank raises it, prefixed with the rank's number, so a bad
file on one rank stops the whole job with one clear message instead of
leaving the others waiting.

A rank that *dies* cannot send anything: gloo raises "connection closed" on
the others. Before each collective every rank leaves a mark in the job's
key-value store (the one torchrun's agent or rank 0 hosts), so the survivors
can name the ranks that never arrived. Collectives time out after
``TE_GPU_DIST_TIMEOUT`` seconds (default 1800, torch's own default) in groups
te_gpu creates; a hung rank that keeps its connections open is found only then.

Models are shared out by :func:`assign`: longest processing time first onto
the least loaded rank, deterministic, so every rank computes the same
assignment without a message.
"""
from __future__ import annotations

import datetime
import itertools
import os
import pickle
import signal
import sys
from contextlib import contextmanager

import torch
import torch.distributed as dist

TIMEOUT_ENV = "TE_GPU_DIST_TIMEOUT"
_LAUNCH_ENV = ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")

# every te_gpu collective of this process gets the next number; all ranks make the
# same collectives in the same order, so the numbers agree and name store marks
_SEQUENCE = itertools.count()
_active = None   # the World while te_gpu is inside joined(): nested calls reuse it


class DistributedError(RuntimeError):
    """A rank stopped (died, was killed, lost its connection) or the ranks disagree."""


def timeout() -> datetime.timedelta:
    """How long a collective waits for the slowest rank (``TE_GPU_DIST_TIMEOUT`` seconds)."""
    text = os.environ.get(TIMEOUT_ENV, "1800")
    try:
        seconds = float(text)
    except ValueError:
        raise ValueError(f"{TIMEOUT_ENV}={text!r} is not a number of seconds") from None
    if seconds <= 0:
        raise ValueError(f"{TIMEOUT_ENV} must be positive, got {seconds}")
    return datetime.timedelta(seconds=seconds)


def launched() -> bool:
    """True when torchrun's (or an equivalent launcher's) environment asks for > 1 process."""
    if not all(os.environ.get(v) for v in _LAUNCH_ENV):
        return False
    try:
        return int(os.environ["WORLD_SIZE"]) > 1
    except ValueError:
        return False


def launch_rank() -> int:
    """This process's rank: the initialised group's, else torchrun's ``RANK``, else 0."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank()
    return int(os.environ.get("RANK", 0)) if launched() else 0


def assign(costs, size: int) -> list:
    """Owner rank of each item: longest processing time first, each onto the least loaded
    rank (ties: the lower index, the lower rank), so the result depends on ``costs`` only."""
    owner, load = [0] * len(costs), [0.0] * size
    for i in sorted(range(len(costs)), key=lambda i: (-costs[i], i)):
        rank = min(range(size), key=lambda r: (load[r], r))
        owner[i] = rank
        load[rank] += costs[i]
    return owner


class World:
    """The processes scoring one zoo: this one's ``rank`` among ``size``, and the collectives."""

    def __init__(self, rank: int = 0, size: int = 1, group=None, store=None):
        self.rank, self.size = rank, size
        self.group = group        # a gloo group for te_gpu's objects (None: the default group)
        self.store = store        # the job's key-value store, for naming ranks that stopped

    def shard(self, names: list, costs: list) -> list:
        """This rank's models among ``names``, in their order (see :func:`assign`)."""
        owner = assign(costs, self.size)
        return [name for name, r in zip(names, owner) if r == self.rank]

    def device(self, dev: torch.device) -> torch.device:
        """A bare ``cuda`` means this process's GPU (torchrun's ``LOCAL_RANK``, else the current one)."""
        if dev.type != "cuda" or dev.index is not None or self.size == 1:
            return dev
        local = int(os.environ.get("LOCAL_RANK", torch.cuda.current_device()))
        return torch.device("cuda", local % torch.cuda.device_count())

    def gather(self, what: str, fn) -> list:
        """Every rank runs ``fn()``; every rank gets the list of all ranks' values, or raises the
        first failing rank's exception (its message prefixed with ``rank k:``)."""
        if self.size == 1:
            return [fn()]
        value, error = _attempt(fn)
        outcomes = [None] * self.size
        self._collective(what, lambda: dist.all_gather_object(
            outcomes, (value, _portable(error)), group=self.group))
        failed = [(r, err) for r, (_, err) in enumerate(outcomes) if err is not None]
        if failed:
            rank, err = failed[0]
            raise _on_rank(error if rank == self.rank else err, rank)
        return [v for v, _ in outcomes]

    def share(self, what: str, fn):
        """Rank 0 runs ``fn()``; every rank gets its value, or raises its exception."""
        if self.size == 1:
            return fn()
        value, error = _attempt(fn) if self.rank == 0 else (None, None)
        box = [(value, _portable(error))]
        self._collective(what, lambda: dist.broadcast_object_list(box, src=0, group=self.group))
        value, err = box[0]
        if err is not None:
            raise _on_rank(error if self.rank == 0 else err, 0)
        return value

    def check_same(self, **digests) -> None:
        """Refuse ranks that were given different inputs (each keyword: what, and its digest)."""
        seen = self.gather("comparing the ranks' inputs", lambda: digests)
        for what, mine in seen[0].items():
            other = [r for r, d in enumerate(seen) if d[what] != mine]
            if other:
                raise ValueError(f"the ranks were given different {what}: rank(s) "
                                 f"{', '.join(map(str, other))} differ from rank 0; every rank "
                                 "must be given the same")

    def _collective(self, what: str, op) -> None:
        """Run the collective ``op``; a broken one (a rank gone) raises DistributedError naming it."""
        mark = f"{next(_SEQUENCE)}"
        try:
            if self.store is not None:
                self.store.set(f"{mark}/{self.rank}", "arrived")
            op()
        except RuntimeError as exc:   # gloo: connection closed by peer, timeout (DistBackendError)
            raise DistributedError(self._broken(what, mark, exc)) from exc

    def _broken(self, what: str, mark: str, exc: Exception) -> str:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        head = f"{what} failed on rank {self.rank} of {self.size}"
        tail = (" Whatever each rank had finished is kept in its checkpoint or manifest shard, if "
                f"the run writes one: rerun the same command to resume. ({reason})")
        if self.store is None:
            return f"{head}: another rank stopped or lost its connection.{tail}"
        try:
            absent = [r for r in range(self.size) if not self.store.check([f"{mark}/{r}"])]
        except RuntimeError as err:
            return (f"{head}: another rank stopped, and the job's store, which rank 0 or its "
                    f"launcher holds, does not answer either ({err}).{tail}")
        if not absent:
            return f"{head}: a rank stopped during it.{tail}"
        ranks = "rank " + str(absent[0]) if len(absent) == 1 else "ranks " + ", ".join(map(str, absent))
        return (f"{head}: {ranks} never reached it (died, was killed, or lost its connection: "
                f"see that rank's log).{tail}")


def _attempt(fn) -> tuple:
    try:
        return fn(), None
    except Exception as exc:   # carried to the other ranks, then raised everywhere
        return None, exc


def _portable(exc):
    """``exc`` if it survives pickling (so its type travels), else a DistributedError with its text."""
    if exc is None:
        return None
    try:
        pickle.loads(pickle.dumps(exc))
        return exc
    except Exception:
        return DistributedError(f"{type(exc).__name__}: {exc}")


def _on_rank(exc: Exception, rank: int) -> Exception:
    """``exc`` with ``rank k:`` before its message, where the message is a plain string."""
    if exc.args and isinstance(exc.args[0], str) and not exc.args[0].startswith("rank "):
        exc.args = (f"rank {rank}: {exc.args[0]}",) + exc.args[1:]
    return exc


# --------------------------------------------------------------------------
# joining the job
# --------------------------------------------------------------------------

@contextmanager
def joined(device=None, enabled: bool = True):
    """The :class:`World` of this process for the ``with`` block (see the module's docstring).

    ``device``: where the scores will be computed; on CUDA a group initialised
    here also gets NCCL (and the process its GPU, ``LOCAL_RANK``). ``enabled=False``:
    a world of this process alone, whatever the environment.
    """
    global _active
    if not enabled:
        yield World()
        return
    if _active is not None:                 # inside an outer te_gpu call: its world
        yield _active
        return
    if dist.is_available() and dist.is_initialized():
        world, teardown = _of_initialised_group()
    elif launched():
        world, teardown = _initialise(device), dist.destroy_process_group
    else:
        world, teardown = World(), None
    _active = world if world.size > 1 else None
    try:
        yield world
    finally:
        _active = None
        if teardown is not None:
            teardown()


def _initialise(device) -> World:
    """A process group from torchrun's environment: gloo, plus NCCL for CUDA tensors on GPUs."""
    wait = timeout()
    cuda = _is_cuda(device)
    if cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)) % torch.cuda.device_count())
    store, rank, size = next(dist.rendezvous("env://", timeout=wait))
    store.set_timeout(wait)
    dist.init_process_group("cpu:gloo,cuda:nccl" if cuda else "gloo", store=store, rank=rank,
                            world_size=size, timeout=wait)
    return World(rank, size, store=dist.PrefixStore("te_gpu", store))


def _of_initialised_group():
    """(World, teardown) for a group the caller initialised: its gloo side if it has one, else
    a gloo group made here (destroyed on the way out)."""
    rank, size = dist.get_rank(), dist.get_world_size()
    if size == 1:
        return World(), None
    group = None if "gloo" in str(dist.get_backend()) else dist.new_group(backend="gloo",
                                                                           timeout=timeout())
    try:   # private, hence guarded: without the store the survivors cannot name a dead rank
        store = dist.PrefixStore("te_gpu", dist.distributed_c10d._get_default_store())
    except Exception:
        store = None
    teardown = (lambda: dist.destroy_process_group(group)) if group is not None else None
    return World(rank, size, group=group, store=store), teardown


def _is_cuda(device) -> bool:
    try:
        dev = torch.device(device) if device is not None else None
    except (RuntimeError, TypeError):
        return False
    return dev is not None and dev.type == "cuda" and torch.cuda.is_available()


@contextmanager
def terminated_as_exit():
    """SIGTERM raises SystemExit(143) for the ``with`` block, so locks are released and
    temporary files removed (``finally`` blocks run) when torchrun stops the survivors of
    a failed rank."""
    def stop(signum, frame):
        sys.exit(128 + signum)

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
