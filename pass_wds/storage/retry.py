"""The one retry policy of every remote read: transient failures are retried with exponential backoff and
full jitter until a time budget is spent; permanent ones fail at once with their real cause.

What counts as transient is :func:`~pass_wds.storage.errors.classify`'s answer (connection refused or reset,
timeouts, cut bodies, HTTP 5xx / 408 / 429, S3 ``SlowDown``); 404, 403, bad credentials and missing buckets are
permanent. The budget (``seconds``, ``retry_seconds`` in the loader's and make-shards' options) is time spent
failing *without progress*: a stream that delivers bytes between failures starts a fresh budget, so a long
read survives any number of short outages, while a store that stays down fails after the budget. No try runs
longer than ``read_timeout`` without an answer or a byte, and no try starts after the budget is spent, so the
longest wait before an error is ``seconds + read_timeout`` (plus the time to reconnect once).
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from fsspec.asyn import sync

from pass_wds.config import READ_TIMEOUT, RETRY_SECONDS  # the defaults every config declares
from pass_wds.storage.errors import classify, first_line, redact, storage_error
from pass_wds.storage.log import get_logger

log = get_logger("pass_wds.storage")
T = TypeVar("T")


@dataclass(frozen=True)
class RetryPolicy:
    """How remote reads treat transient failures (see the module docstring).

    ``seconds``: the budget of time spent failing without progress (0: never retry). ``read_timeout``: no
    answer or byte for this long is a failed try. Delays grow as ``base_delay * 2**n``, capped at
    ``max_delay``, with full jitter (so many readers that failed together do not retry together); the last
    delay is cut to what is left of the budget. ``attempts`` optionally caps the consecutive failed tries as
    well (None: the budget alone decides).
    """

    seconds: float = RETRY_SECONDS
    read_timeout: float = READ_TIMEOUT
    attempts: int | None = None
    base_delay: float = 0.2
    max_delay: float = 10.0
    chunk_size: int = 1 << 20

    def __post_init__(self) -> None:
        if self.seconds < 0:
            raise ValueError(f"retry seconds must be >= 0, got {self.seconds}")
        if self.read_timeout <= 0:
            raise ValueError(f"read_timeout must be > 0, got {self.read_timeout}")
        if self.attempts is not None and self.attempts < 1:
            raise ValueError(f"attempts must be >= 1, got {self.attempts}")

    def delay(self, failure: int, rng: random.Random) -> float:
        """The jittered wait before try ``failure + 1`` (``failure`` counts from 1)."""
        return rng.uniform(0, min(self.max_delay, self.base_delay * 2 ** min(failure - 1, 30)))

    @classmethod
    def of(cls, retry_seconds: float | None = None, read_timeout: float | None = None) -> RetryPolicy:
        """The policy for the ``retry_seconds`` / ``read_timeout`` options (None: the default)."""
        return cls(
            seconds=RETRY_SECONDS if retry_seconds is None else float(retry_seconds),
            read_timeout=READ_TIMEOUT if read_timeout is None else float(read_timeout),
        )


class Attempts:
    """The retry loop's state for one operation on one URL: call :meth:`failed` from the ``except`` block of
    every failed try (it waits, or raises the final one-line error) and :meth:`progressed` when a try got
    somewhere (a stream received bytes), which starts a fresh budget."""

    def __init__(
        self,
        policy: RetryPolicy | None,
        url: str,
        storage_options: Mapping[str, Any] | None,
        action: str,
    ) -> None:
        self.policy = policy or RetryPolicy()
        self.url, self.so, self.action = url, storage_options, action
        self.failures = 0  # consecutive, since the last progress
        self.retries = 0  # all of them, over the operation's life
        self._since: float | None = None  # when the current run of failures began
        self._try_started = time.monotonic()
        self._rng = random.Random()

    def start(self) -> None:
        """Mark the start of a try (a request, or one read of a stream): when it fails first, the budget runs
        from here, so the try's own wait for an answer counts against it."""
        if self.failures == 0:
            self._try_started = time.monotonic()

    def progressed(self) -> None:
        self.failures = 0
        self._since = None

    def failed(self, exc: BaseException, position: int | None = None) -> None:
        """Wait before the next try, or raise: at once for a permanent failure (its one-line error, or ``exc``
        itself when it is not about storage), after the budget for a transient one (naming the last cause,
        the tries and the time spent)."""
        cause = classify(exc)
        if not cause.transient:
            translated = storage_error(exc, self.url, self.so, self.action, position=position)
            if translated is exc:
                raise exc
            raise translated from None
        now = time.monotonic()
        if self._since is None:
            self._since = self._try_started
        self.failures += 1
        self.retries += 1
        spent = now - self._since
        left = self.policy.seconds - spent
        capped = self.policy.attempts is not None and self.failures >= self.policy.attempts
        if left <= 0 or capped:
            raise storage_error(
                exc,
                self.url,
                self.so,
                self.action,
                tries=self.failures,
                seconds=spent,
                position=position,
                read_timeout=self.policy.read_timeout,
            ) from None
        wait = min(self.policy.delay(self.failures, self._rng), left)
        log.warning(
            "retrying %s%s in %.2fs (try %d, %.1f of %g s spent) after %s",
            redact(self.url, self.so),
            "" if position is None else f" at byte {position}",
            wait,
            self.failures + 1,
            spent,
            self.policy.seconds,
            redact(cause.detail or first_line(exc), self.so) or type(exc).__name__,
        )
        time.sleep(wait)


def call(
    fn: Callable[[], T],
    url: str,
    storage_options: Mapping[str, Any] | None,
    action: str,
    policy: RetryPolicy | None = None,
) -> T:
    """``fn()`` retried under ``policy`` (the one loop for one-shot requests: existence, sizes, listings,
    small reads); its errors become one-line :class:`~pass_wds.storage.errors.StorageError`\\s."""
    attempts = Attempts(policy, url, storage_options, action)
    while True:
        attempts.start()
        try:
            return fn()
        except Exception as exc:
            attempts.failed(exc)


def run_bounded(fs: Any, coro: Any, timeout: float) -> Any:
    """Run a coroutine on an async filesystem's event loop, cancelled after ``timeout`` seconds (a
    ``TimeoutError``, transient): fsspec's own ``sync(timeout=)`` would leave the request running.

    The filesystem's session is set up first, outside the bound: creating a botocore client loads its models
    synchronously on the loop (seconds on a busy machine), which is no server's silence."""
    set_session = getattr(fs, "set_session", None)
    if set_session is not None:
        try:
            sync(fs.loop, set_session)
        except BaseException:
            coro.close()
            raise
    return sync(fs.loop, asyncio.wait_for, coro, timeout)


__all__ = [
    "READ_TIMEOUT",
    "RETRY_SECONDS",
    "Attempts",
    "RetryPolicy",
    "call",
    "run_bounded",
]
