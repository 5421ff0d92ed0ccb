"""Running independent tasks on Dask: one task per output block, a flat graph (no dependencies between the tasks
of one call), results reported to the caller in the calling thread as each task finishes (for progress and
completion records).

- :class:`LocalRunner`: Dask's local threaded scheduler (the default).
- :class:`DistributedRunner`: a ``dask.distributed`` cluster: a ``LocalCluster`` of worker processes it starts
  (``workers``), or an existing scheduler (``address``). Tasks of a worker that dies are retried (``RETRIES``).

Tasks are ``func(spec)`` with a module-level ``func`` and a small picklable ``spec``, so they run the same on a
thread or another machine; what a task computes must not depend on where it runs (BLAS is kept to one thread in
every process: :func:`one_blas_thread`). On an error or Ctrl-C, the runner stops: queued tasks are dropped and
running ones finish before the exception goes on, so the caller may remove what they write.
"""
from __future__ import annotations

import contextlib
import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Sequence

from . import cluster_workers
from ..core.errors import BigVolumeError
from ..core.progress import interrupt_as_flag

RETRIES = 2  # a task whose worker died runs again on another, at most this many times

_BLAS_LIMITED = False


def one_blas_thread() -> None:
    """Keep BLAS to one thread in this process, once and for good: block results must not depend on how BLAS
    splits its products, and concurrent tasks must not undo each other's limits (threadpoolctl's contexts are
    process-wide)."""
    global _BLAS_LIMITED
    if not _BLAS_LIMITED:
        try:
            from threadpoolctl import threadpool_limits
        except ImportError:
            return
        threadpool_limits(limits=1, user_api="blas")
        _BLAS_LIMITED = True


def _import_dask():
    try:
        import dask  # noqa: F401
    except ImportError:
        raise BigVolumeError("pyramids run on Dask: pip install 'dask[array]' distributed") from None


def _task(func, spec):
    one_blas_thread()
    return func(spec)


class LocalRunner:
    """Dask's local threaded scheduler over ``threads`` threads."""

    name = "dask threads"
    distributed = False

    def __init__(self, threads: int):
        _import_dask()
        self.threads = max(1, int(threads))

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def run_everywhere(self, func: Callable) -> None:
        """``func()`` in every process that ran tasks (e.g. to free what they cached)."""
        func()

    def map(self, func: Callable, specs: Sequence, done: Callable[[int, object], None],
            at_once: int | None = None) -> None:
        """``func(spec)`` for every spec; ``done(n, result)`` in this thread after task ``n`` finishes. ``at_once``:
        at most that many tasks run at the same time (fewer threads than the runner's, when that many tasks would
        not fit in memory)."""
        if not specs:
            return
        import dask.threaded
        threads = max(1, min(self.threads, at_once or self.threads))
        from dask.callbacks import Callback
        keys = [("bigvolume-block", n) for n in range(len(specs))]
        graph = {key: (_task, func, spec) for key, spec in zip(keys, specs)}

        def posttask(key, result, _dsk, _state, _worker):
            done(key[1], result)

        with ThreadPoolExecutor(threads, thread_name_prefix="bigvolume-block") as pool:
            try:
                dask.threaded.get(graph, keys, num_workers=threads, pool=pool,
                                  callbacks=[Callback(posttask=posttask)._callback])
            except BaseException:
                pool.shutdown(wait=True, cancel_futures=True)  # nothing writes once we return
                raise


def _current_client_of(address: str):
    """This process's current (or global) ``dask.distributed`` client when it is connected to ``address``."""
    from distributed import Client
    try:
        client = Client.current(allow_global=True)
    except ValueError:
        return None
    try:
        connected = client.scheduler.address
    except AttributeError:
        return None

    def normal(text):
        return text if "://" in text else "tcp://" + text
    return client if client.status == "running" and normal(connected) == normal(address) else None


class DistributedRunner:
    """A ``dask.distributed`` client: on a ``LocalCluster`` of ``workers`` processes (``memory_limit`` bytes each,
    one thread each) or on the scheduler at ``address``."""

    distributed = True

    def __init__(self, workers: int | None = None, address: str | None = None, memory_limit: float | None = None):
        _import_dask()
        try:
            import distributed  # noqa: F401
        except ImportError:
            raise BigVolumeError("--workers and --scheduler need dask.distributed: pip install distributed") from None
        self.workers, self.address, self.memory_limit = workers, address, memory_limit
        self.client = self.cluster = None
        self.name = f"scheduler {address}" if address else f"LocalCluster of {workers} processes"

    def __enter__(self):
        from distributed import Client, LocalCluster
        # Ctrl-C inside the client's event loop makes tornado log the cancelled callbacks' tracebacks on stderr;
        # the user gets our one line instead (task errors still come back through the futures).
        self._tornado = logging.getLogger("tornado.application")
        self._tornado_level = self._tornado.level
        self._tornado.setLevel(logging.CRITICAL)
        # The caller's own client of that scheduler (a notebook's) is used, and left open: a second client in one
        # process has made futures wait on the other client's event loop after a worker died ("bound to a
        # different event loop").
        callers = _current_client_of(self.address) if self.address else None
        self._own_client = callers is None
        if callers is not None:
            self.client = callers
        elif self.address:
            try:
                self.client = Client(self.address, timeout="20s")
            except (OSError, TimeoutError) as error:
                raise BigVolumeError(f"cannot reach the Dask scheduler at {self.address}: {error}") from None
        else:
            # Ctrl-C (SIGTERM) waits while the workers start (a second or two): cut short, the half-made cluster was
            # never closed, and its workers' leaked semaphores were reported on stderr after our one line
            with interrupt_as_flag(raise_at_end=False) as interrupt:
                try:
                    self.cluster = LocalCluster(
                        n_workers=self.workers, threads_per_worker=1, processes=True,
                        memory_limit=int(self.memory_limit) if self.memory_limit else "auto",
                        dashboard_address=None, silence_logs=logging.ERROR,
                        # no dashboard, yet the scheduler's HTTP server starts: on any free port (on 8787 it
                        # warned on stderr whenever another cluster held it)
                        scheduler_kwargs={"dashboard_address": ":0"}, preload=[cluster_workers.__name__])
                    self.client = Client(self.cluster)
                except Exception:
                    # A terminal's Ctrl-C reaches the whole process group: the workers it stopped while starting
                    # made the start fail ("Nanny failed to start"), a traceback and exit 1 before; it is the
                    # interrupt that is raised
                    if not interrupt.requested:
                        raise
            if interrupt.requested:
                self.__exit__(None, None, None)
                raise interrupt.error()
        return self

    def __exit__(self, *exc):
        if self._own_client:
            with contextlib.suppress(Exception):
                self.client.close()
        if self.cluster is not None:
            with contextlib.suppress(Exception):
                self.cluster.close()
        self._tornado.setLevel(self._tornado_level)
        return False

    def run_everywhere(self, func: Callable) -> None:
        self.client.run(func)

    def map(self, func: Callable, specs: Sequence, done: Callable[[int, object], None],
            at_once: int | None = None) -> None:
        # (at_once: each worker runs one task at a time already; what a worker's limit holds is checked before the
        # cluster starts)
        if not specs:
            return
        from distributed import as_completed, wait
        futures = self.client.map(_task, [func] * len(specs), specs, retries=RETRIES, pure=False)
        number = {future.key: n for n, future in enumerate(futures)}
        try:
            for future in as_completed(futures):
                done(number[future.key], future.result())
        except BaseException:
            self.client.cancel(futures)
            with contextlib.suppress(Exception):
                wait(futures, timeout=60)  # running tasks end before the caller cleans up
            raise
