"""Where make-shards runs its tasks: local processes (the default) or a Dask cluster.

The conversion has two kinds of task, both independent and deterministic: list one input archive, and write
one planned shard. :class:`Executor` is the one seam they go through, so the orchestration in :mod:`.make`
does not know which engine runs them, and the same plan gives the same bytes on either. Retrying a task
whose worker died is the engine's job; writes are atomic, so a retried shard is never seen half-written.

Dask (``pip install pass-wds[dask]``) is imported only when asked for: ``--scheduler tcp://host:8786`` joins
an existing cluster, ``--cluster local`` starts a ``LocalCluster`` of ``--workers`` processes, and
``--cluster slurm`` submits ``dask-jobqueue`` Slurm jobs with the ``slurm_*`` options of the config.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import multiprocessing
import os
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import (
    FIRST_COMPLETED,
    CancelledError,
    Future,
    ProcessPoolExecutor,
    ThreadPoolExecutor,
    wait,
)
from typing import Any, TypeVar

from pass_wds import lifeline
from pass_wds.convert.options import ConvertConfig
from pass_wds.errors import ConfigError, PassWdsError
from pass_wds.lifeline import ParentWatch

log = logging.getLogger("pass_wds.make_shards")

A = TypeVar("A")
R = TypeVar("R")

MISSING_DASK = (
    "--scheduler/--cluster need Dask: pip install 'pass-wds[dask]' (dask[distributed] and dask-jobqueue)"
)


class EngineError(PassWdsError, RuntimeError):
    """The execution engine itself failed (not a task): one line for the user, exit 1 (rerun to resume)."""

    exit_code = 1


class Executor:
    """Runs tasks and yields their results as they finish, keeping a bounded window in flight.

    ``io`` tasks (listing: sequential reads) may share a process; the others (shard writing: decoding and
    hashing) need a core each. Results come back in completion order, so callers tag what they need.
    """

    name = "executor"
    dashboard: str | None = None

    def __init__(self, slots: int) -> None:
        self.slots = max(1, slots)  # tasks running at once: the window is twice this

    def imap_unordered(self, fn: Callable[[A], R], args: Iterable[A], *, io: bool = False) -> Iterator[R]:
        raise NotImplementedError

    def close(self) -> None:
        """Stop the workers; tasks still queued are cancelled."""

    def __enter__(self) -> Executor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _window(
    submit: Callable[[A], Future[R]], args: Iterable[A], size: int
) -> Iterator[R]:  # concurrent.futures only
    it = iter(args)
    pending = {submit(a) for a in itertools.islice(it, size)}
    try:
        while pending:
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            for fut in done:
                nxt = next(it, _END)
                if nxt is not _END:
                    pending.add(submit(nxt))  # type: ignore[arg-type]
                yield fut.result()
    finally:
        for fut in pending:
            fut.cancel()


_END = object()


class LocalExecutor(Executor):
    """Today's engine: a spawn-context process pool for shards (none with one worker), threads for listing."""

    name = "local processes"

    def __init__(self, workers: int) -> None:
        super().__init__(workers)
        self.pool: ProcessPoolExecutor | None = None
        if workers > 1:
            ctx = multiprocessing.get_context("spawn")
            # the workers end with this process, however it ends (kill -9 and the OOM killer included)
            self.pool = ProcessPoolExecutor(
                max_workers=workers, mp_context=ctx, initializer=ParentWatch(kernel=True)
            )
            from pass_wds.convert.writing import warm_up

            for _ in range(workers):  # start (spawn and import) the workers now, while the inputs are listed
                self.pool.submit(warm_up)

    def imap_unordered(self, fn: Callable[[A], R], args: Iterable[A], *, io: bool = False) -> Iterator[R]:
        if io:  # listing is I/O: a few threads of this process read several archives at once
            with ThreadPoolExecutor(max_workers=8, thread_name_prefix="pass-wds-list") as threads:
                yield from _window(lambda a: threads.submit(fn, a), args, 8)
            return
        if self.pool is None:
            for a in args:
                yield fn(a)
            return
        pool = self.pool
        yield from _window(lambda a: pool.submit(fn, a), args, 2 * self.slots)

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(cancel_futures=True)
            self.pool = None


class DaskExecutor(Executor):
    """Tasks go to a Dask cluster through a ``distributed.Client``; its scheduler retries a task whose worker
    died (up to ``distributed.scheduler.allowed-failures`` times) on another worker."""

    name = "dask"

    def __init__(self, connect: Callable[[], tuple[Any, Any]]) -> None:
        """``connect`` returns ``(client, cluster or None)``; it runs in a thread, so starting a cluster (seconds
        for a LocalCluster, a queue wait on Slurm) overlaps with reading the metadata."""
        super().__init__(1)
        self._starter = ThreadPoolExecutor(max_workers=1, thread_name_prefix="pass-wds-dask-start")
        self._ready = self._starter.submit(connect)
        self._client: Any = None
        self.cluster: Any = None

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client, self.cluster = self._ready.result()  # a ConfigError from connect surfaces here
            self._starter.shutdown()
            self.slots = max(1, len(self._client.scheduler_info().get("workers", {})))
            self.name = f"dask ({self._client.scheduler.address})"
            self.dashboard = self._client.dashboard_link
            try:
                import bokeh  # noqa: F401

                served = ""
            except ImportError:
                served = " (served once bokeh is installed on the scheduler)"
            log.info(
                "running on %s with %d workers; dashboard: %s%s",
                self.name,
                self.slots,
                self.dashboard,
                served,
            )
        return self._client

    def imap_unordered(self, fn: Callable[[A], R], args: Iterable[A], *, io: bool = False) -> Iterator[R]:
        from distributed import as_completed

        # Workers may join late (Slurm jobs queue): size the window by who is there now, at least 2 tasks.
        size = 2 * max(self.slots, len(self.client.scheduler_info().get("workers", {})), 1)
        it = iter(args)
        pending = {self.client.submit(fn, a, pure=False) for a in itertools.islice(it, size)}
        stream = as_completed(pending)
        try:
            for fut in stream:
                pending.discard(fut)
                nxt = next(it, _END)
                if nxt is not _END:
                    new = self.client.submit(fn, nxt, pure=False)
                    pending.add(new)
                    stream.add(new)
                try:
                    result = fut.result()
                except Exception as e:
                    raise self._lost(e) from None
                fut.release()
                yield result
        finally:
            if pending:
                self.client.cancel(list(pending))

    def _lost(self, e: Exception) -> Exception:
        """A task's own error is raised as it is (as in a local run); losing the cluster is one line."""
        from distributed import KilledWorker
        from distributed.comm import CommClosedError

        where = self.client.scheduler.address
        if isinstance(e, KilledWorker):
            return EngineError(f"a task was lost with every worker that ran it ({e}); rerun to resume")
        if isinstance(e, CommClosedError | CancelledError) or self.client.status != "running":
            return EngineError(f"lost the Dask scheduler at {where}; rerun the same command to resume")
        return e

    def close(self) -> None:
        try:
            client, cluster = self._client, self.cluster
            if client is None:
                client, cluster = self._ready.result()
        except Exception:  # it never started: nothing to close
            return
        with contextlib.suppress(Exception):  # a lost scheduler cannot be closed politely
            client.close(timeout=5)
        if cluster is not None:
            cluster.close()
        self._starter.shutdown()


def _import_dask() -> Any:
    try:
        import distributed
    except ImportError:
        raise ConfigError(MISSING_DASK) from None
    return distributed


def check(cfg: ConvertConfig) -> None:
    """Fail fast (before any listing) on engine options that cannot work; imports Dask only when asked."""
    if cfg.scheduler and cfg.cluster:
        raise ConfigError("--scheduler and --cluster exclude each other (join a cluster, or start one)")
    slurm = {k: v for k, v in vars(cfg).items() if k.startswith("slurm_") and v is not None}
    if slurm and cfg.cluster != "slurm":
        raise ConfigError(f"{', '.join(sorted(slurm))} only apply with --cluster slurm")
    if cfg.scheduler is not None and "://" not in cfg.scheduler:
        raise ConfigError(f"--scheduler must be an address like tcp://host:8786, got {cfg.scheduler!r}")
    if cfg.scheduler or cfg.cluster:
        _import_dask()
    if cfg.cluster == "slurm":
        try:
            import dask_jobqueue  # noqa: F401
        except ImportError:
            raise ConfigError(MISSING_DASK) from None
        missing = [k for k in ("slurm_cores", "slurm_memory") if getattr(cfg, k) is None]
        if missing:
            raise ConfigError(
                f"--cluster slurm needs {' and '.join(missing)} in the config (see configs/dask-slurm.yaml)"
            )


def create(cfg: ConvertConfig) -> Executor:
    """The executor the config asks for (call :func:`check` first for one-line errors)."""
    check(cfg)
    if not (cfg.scheduler or cfg.cluster):
        return LocalExecutor(cfg.workers)
    distributed = _import_dask()

    def connect() -> tuple[Any, Any]:
        if cfg.scheduler:
            try:
                return distributed.Client(cfg.scheduler, timeout="10s"), None
            except OSError as e:
                raise ConfigError(f"cannot reach the Dask scheduler at {cfg.scheduler}: {e}") from None
        if cfg.cluster == "local":
            # one single-threaded process per worker (shard writing holds the GIL); random ports: no clashes
            # its worker processes end with this one (pass_wds.lifeline.dask_setup), however it ends
            cluster = distributed.LocalCluster(
                n_workers=cfg.workers,
                threads_per_worker=1,
                processes=True,
                dashboard_address=":0",
                preload=["pass_wds.lifeline"],
                env={lifeline.PARENT_ENV: str(os.getpid())},
            )
            return distributed.Client(cluster), cluster
        cluster = slurm_cluster(cfg)
        cluster.scale(n=cfg.workers)
        client = distributed.Client(cluster)
        log.info("submitted Slurm jobs for %d workers; waiting for the first to start", cfg.workers)
        client.wait_for_workers(1)
        return client, cluster

    return DaskExecutor(connect)


def slurm_cluster(cfg: ConvertConfig) -> Any:
    """A ``dask-jobqueue`` SLURMCluster with the config's job options (no jobs submitted until scaled)."""
    from dask_jobqueue import SLURMCluster

    job: dict[str, Any] = {
        "cores": cfg.slurm_cores,
        "memory": cfg.slurm_memory,
        "walltime": cfg.slurm_walltime,
        "queue": cfg.slurm_queue,
        "account": cfg.slurm_account,
        "processes": cfg.slurm_processes,
        "job_extra_directives": cfg.slurm_job_extra,
    }
    return SLURMCluster(**{k: v for k, v in job.items() if v is not None})
