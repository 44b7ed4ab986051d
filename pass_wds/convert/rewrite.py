"""One shard of a revision rewritten from itself (:mod:`.update` drives it): its kept samples' tar blocks
copied byte for byte, in order, into a new shard with a new ``.idx``; the old shard's sha256 is checked on the
way. And the crash hook the update's kill -9 tests use to stop at exact points."""

from __future__ import annotations

import hashlib
import os
import signal
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import IO, Any

from pass_wds import storage
from pass_wds.convert.revision import ShardEdit, sample_spans
from pass_wds.format import manifest
from pass_wds.format.idx import idx_line, idx_text
from pass_wds.format.tar import BLOCK, header_size

CRASH_ENV = "PASS_WDS_TEST_CRASH"
"""Test hook: ``<point>[:<n>]`` makes the process SIGKILL itself the n-th time (default 1st) it reaches the
named point (:data:`CRASH_POINTS`); the crash tests use it to kill at exact places. Never set it otherwise."""
CRASH_POINTS = (
    "state-written",  # _state/update.json written, no shard yet
    "mid-shard",  # inside a shard: some samples copied, the temp file incomplete
    "shard-done",  # after a shard and its record (":2": after the second)
    "side-files",  # every side file written, index.json not yet
    "index-written",  # index.json replaced, superseded shards not yet deleted
    "mid-delete",  # after the first superseded file was deleted
)


class Crash:
    """The :data:`CRASH_ENV` hook of one run (a counter per point, thread-safe)."""

    def __init__(self) -> None:
        point, _, nth = os.environ.get(CRASH_ENV, "").partition(":")
        self.point = point
        self.nth = int(nth) if nth.isdigit() else 1
        self.hits = 0
        self.lock = threading.Lock()

    def __call__(self, point: str) -> None:
        if point != self.point:
            return
        with self.lock:
            self.hits += 1
            if self.hits == self.nth:
                os.kill(os.getpid(), signal.SIGKILL)


@dataclass
class Written:
    position: int
    nsamples: int
    filesize: int
    sha256: str

    def entry(self, edit: ShardEdit) -> dict[str, Any]:
        return {
            "url": edit.new_url,
            "nsamples": self.nsamples,
            "filesize": self.filesize,
            "sha256": self.sha256,
            "idx": edit.new_idx,
        }


def _read_exact(f: IO[bytes], n: int, h: Any) -> bytes:
    parts = []
    while n:
        chunk = f.read(min(n, 8 << 20))
        if not chunk:
            raise EOFError
        h.update(chunk)
        parts.append(chunk)
        n -= len(chunk)
    return b"".join(parts) if len(parts) != 1 else parts[0]


def rewrite_shard(edit: ShardEdit, out_url: str, so: dict[str, Any], crash: Callable[[str], None]) -> Written:
    """Write ``edit.new_url``: the old shard's kept samples, their tar blocks copied in order (a refreshed
    sample gets its new JSON member); the whole old shard is read once and must match its sha256."""
    from pass_wds.convert.writing import TarWriter

    assert edit.new_url is not None and edit.new_idx is not None
    old_url = storage.join(out_url, edit.old["url"])
    layout, spans = edit.layout, sample_spans(edit.layout)
    removed = set(edit.removed)
    lines: list[str] = []
    h = hashlib.sha256()
    tw: TarWriter | None = None
    damaged = f"{storage.redact(old_url)} does not match its index.json entry or .idx; run `pass-wds verify`"
    try:
        with (
            storage.open_stream(old_url, 0, None, so) as src,
            storage.atomic_write(storage.join(out_url, edit.new_url), so) as f,
        ):
            tw = TarWriter(f)
            for i, (a, b) in enumerate(spans):
                try:
                    block = _read_exact(src, b - a, h)
                except EOFError:
                    raise manifest.ManifestError(damaged) from None
                if i in removed:
                    continue
                key, members = layout.keys[i], layout.members[i]
                for m in members:
                    head = block[m.offset - BLOCK - a : m.offset - a]
                    name = f"{key}.{m.ext}"
                    if (
                        m.offset - BLOCK < a
                        or head[:100].rstrip(b"\0") != name.encode()
                        or header_size(head) != m.size
                    ):
                        raise manifest.ManifestError(damaged)
                if i in edit.refreshed:
                    parts = [
                        (
                            f"{key}.{m.ext}",
                            edit.refreshed[i]
                            if m.ext == "json"
                            else block[m.offset - a : m.offset - a + m.size],
                        )
                        for m in members
                    ]
                    offsets = tw.add_sample(parts)
                    lines.append(idx_line((n, o, len(d)) for (n, d), o in zip(parts, offsets, strict=True)))
                else:
                    base = tw.offset
                    tw.add_raw(block)
                    lines.append(idx_line((f"{key}.{m.ext}", m.offset - a + base, m.size) for m in members))
                if len(lines) == 1:
                    crash("mid-shard")
            rest = src.read()
            h.update(rest)
            if (
                spans
                and spans[-1][1] + len(rest) != edit.old["filesize"]
                or h.hexdigest() != edit.old["sha256"]
            ):
                raise manifest.ManifestError(damaged)
            tw.close()
    finally:
        if tw is not None:
            tw.hexdigest()
    storage.write_bytes(storage.join(out_url, edit.new_idx), idx_text(lines), so)
    return Written(edit.position, len(lines), tw.offset, tw.hexdigest())
