"""``make-shards update``: a new revision of an output that removes samples, rewriting only what must change.

The removed keys are the shard keys a new allowlist lacks (``--metadata``) or those a keys file lists
(``--remove``). Each shard holding one is rebuilt **from the shard itself**: its kept samples' tar blocks are
copied byte for byte, in order, into a shard with a new name (:mod:`pass_wds.format.revisions`), a new
``.idx``, sha256, size and count; the old shard's sha256 is checked on the way, so a damaged shard is never
laundered under a fresh checksum. Untouched shards keep their bytes, names and modification times.

Crash safety (the protocol; docs/revisions.md has the reasoning):

1. ``_state/update.json`` records the update (its digest, the sha256 of the manifest it starts from, the date,
   the new and superseded names) before any shard is written: what it names is this output's own.
2. New shards are written under temporary names and renamed when complete (object stores: the upload is
   committed only on success); each finished shard is recorded in ``_state/update-NNNNNN.json``.
3. The side files, then ``index.json`` (atomically, last of all that readers use) are written.
4. Only then are the superseded shards deleted (``--keep-superseded`` keeps them), and ``_state`` goes.

A rerun of the same command after ``kill -9`` anywhere finds the state, keeps the shards it recorded, and
ends with the bytes an uninterrupted update writes (set ``SOURCE_DATE_EPOCH`` for a fixed history date;
otherwise the date is the one recorded when the update began). A reader that opened the old manifest reads
only old names: it finishes, or (once they are deleted) gets a not-found error, never a mix.
"""

from __future__ import annotations

import csv
import datetime
import hashlib
import io
import json
import os
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import IO, Any

from pass_wds import __version__, storage
from pass_wds.config import ConfigError
from pass_wds.convert.output import LOCK, STATE, read_json
from pass_wds.format import croissant, manifest, reasons, revisions
from pass_wds.format.idx import ShardIndex, idx_line, idx_text, parse_idx
from pass_wds.format.keys import key_of, safe_key
from pass_wds.format.samples import sample_row, with_row
from pass_wds.format.tar import BLOCK, END_OF_ARCHIVE, header_size, padded
from pass_wds.storage.errors import get_logger
from pass_wds.verify import json_members

log = get_logger("pass_wds.make_shards")

STATE_FILE = "update.json"
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


class UpdateError(ConfigError):
    """An update that cannot be made as asked (bad input, an output that is not ours); one line."""


@dataclass(frozen=True)
class UpdateOptions:
    """What ``make-shards update`` does (the CLI flags, one to one)."""

    output: str
    metadata: str | None = None
    remove: str | None = None
    key_column: str | None = None  # default: the key column the output was converted with
    refresh_metadata: bool = False
    dataset_version: str | None = None
    keep_superseded: bool = False
    record_keys: bool = False
    yes: bool = False
    dry_run: bool = False
    workers: int = 4
    storage_options: dict[str, Any] = field(default_factory=dict)


class _Crash:
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


# ------------------------------------------------------------------------------------------------ inputs


@dataclass
class Output:
    """A finished pass-wds output as its manifest describes it."""

    url: str
    index: dict[str, Any]
    index_sha256: str
    layouts: list[ShardIndex]

    @property
    def name(self) -> str:
        return str(self.index["name"])

    @property
    def revision(self) -> int:
        return revisions.revision_of(self.index)

    @property
    def shardlist(self) -> list[dict[str, Any]]:
        return self.index["shardlist"]  # type: ignore[no-any-return]


def load_output(url: str, so: dict[str, Any], workers: int = 8) -> Output:
    """The manifest and every shard's ``.idx`` (its keys); one line when ``url`` is no finished pass-wds output."""
    where = storage.redact(url)
    try:
        raw = storage.read_bytes(storage.join(url, manifest.INDEX), so)
    except FileNotFoundError:
        raise UpdateError(f"{where} is not a pass-wds output (no {manifest.INDEX}, or unfinished)") from None
    index = manifest.parse_index(raw, storage.join(url, manifest.INDEX), require_filesize=True)
    if not isinstance(index.get("plan_digest"), str) or not isinstance(index.get("name"), str):
        raise UpdateError(f"{where}: {manifest.INDEX} was not written by make-shards (no plan_digest)")
    for i, entry in enumerate(index["shardlist"]):
        for k in ("url", "idx"):
            if not isinstance(entry.get(k), str) or "/" in entry[k] or manifest.is_external(entry[k]):
                raise UpdateError(f"{where}: shardlist[{i}].{k} is not a shard of this folder")
        if not isinstance(entry.get("sha256"), str):
            raise UpdateError(f"{where}: shardlist[{i}] has no sha256 (not a make-shards output)")

    def layout(entry: dict[str, Any]) -> ShardIndex:
        idx_url = storage.join(url, entry["idx"])
        try:
            parsed = parse_idx(storage.read_text(idx_url, so), idx_url)
        except FileNotFoundError:
            raise UpdateError(f"{where}: {entry['idx']} is missing; run `pass-wds verify {where}`") from None
        if len(parsed) != entry["nsamples"] or not parsed.named:
            raise UpdateError(f"{where}: {entry['idx']} does not match index.json; run `pass-wds verify`")
        return parsed

    with ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="pass-wds-idx") as pool:
        layouts = list(pool.map(layout, index["shardlist"]))
    return Output(url, index, hashlib.sha256(raw).hexdigest(), layouts)


@dataclass
class KeysFile:
    lines: list[tuple[int, str]]  # (line number, key) of every key line
    sha256: str


def read_keys_file(url: str, so: dict[str, Any]) -> KeysFile:
    """A takedown list: UTF-8 text, one key (or image file name) per line; blank and ``#`` lines skipped."""
    shown = storage.redact(url)
    try:
        raw = storage.read_bytes(url, so)
    except FileNotFoundError:
        raise UpdateError(f"--remove: keys file not found: {shown}") from None
    if b"\0" in raw:
        raise UpdateError(f"--remove: {shown} is not a text file of keys (it holds NUL bytes)")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise UpdateError(
            f"--remove: {shown} is not a text file of keys (byte {e.start} is not UTF-8)"
        ) from None
    lines = [(n, s) for n, line in enumerate(text.splitlines(), 1) if (s := line.strip()) and s[0] != "#"]
    if not lines:
        raise UpdateError(f"--remove: {shown} lists no keys")
    return KeysFile(lines, hashlib.sha256(raw).hexdigest())


def _file_sha256(url: str, so: dict[str, Any]) -> str:
    h = hashlib.sha256()
    with storage.open_stream(url, 0, None, so) as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


# ------------------------------------------------------------------------------------------------ the plan


@dataclass
class ShardEdit:
    """One shard to rewrite: the samples left out and the JSON members replaced (``--refresh-metadata``)."""

    position: int
    old: dict[str, Any]
    layout: ShardIndex
    removed: list[int]
    refreshed: dict[int, bytes]  # sample position -> new JSON member
    new_url: str | None  # None: every sample removed, the shard leaves the list
    new_idx: str | None

    def kept(self) -> int:
        return len(self.layout) - len(self.removed)


@dataclass
class Plan:
    out: Output
    opts: UpdateOptions
    removed_keys: list[str]  # sample keys removed (sorted)
    edits: list[ShardEdit]
    source: dict[str, Any]  # what the update applies: allowlist or keys file, its sha256
    unknown_lines: list[int] = field(default_factory=list)  # keys-file lines matching no sample
    changed_rows: int = 0  # kept samples whose allowlist row differs (counted when the JSON was read)
    changed_shards: int = 0
    without_image: list[str] | None = None  # allowlist keys with no sample (None: keys-file mode)
    allow_keys: set[str] | None = None  # safe keys of the allowlist (None: keys-file mode)
    listed: set[str] = field(default_factory=set)  # keys-file lines and their safe forms (keys-file mode)
    errors_dropped: int = 0  # errors.jsonl records of removed (or no longer allowlisted) keys
    refresh_rows: dict[str, str] = field(default_factory=dict)  # sample key -> new row body (refreshed)
    digest: str = ""

    @property
    def revision(self) -> int:
        return self.out.revision + 1

    def new_bytes(self, edit: ShardEdit) -> int:
        spans = sample_spans(edit.layout)
        total = END_OF_ARCHIVE
        for i, (a, b) in enumerate(spans):
            if i in edit.removed:
                continue
            if i in edit.refreshed:
                total += sum(BLOCK + padded(m.size) for m in edit.layout.members[i] if m.ext != "json")
                total += BLOCK + padded(len(edit.refreshed[i]))
            else:
                total += b - a
        return total


def sample_spans(layout: ShardIndex) -> list[tuple[int, int]]:
    """``[start, end)`` of each sample's tar blocks (headers, data, padding): a pass-wds shard holds its
    samples back to back, so sample ``i`` starts where sample ``i - 1`` ends."""
    spans = []
    start = 0
    for members in layout.members:
        end = max(m.offset + padded(m.size) for m in members)
        spans.append((start, end))
        start = end
    return spans


def _matches(keys: KeysFile, sample_keys: dict[str, int]) -> tuple[set[str], list[int]]:
    """Sample keys named by the keys file (as the key, its safe form, or an image file name), and the
    numbers of the lines that name none."""
    found: set[str] = set()
    unknown: list[int] = []
    for n, line in keys.lines:
        for candidate in (line, safe_key(line), safe_key(key_of(line))):
            if candidate in sample_keys:
                found.add(candidate)
                break
        else:
            unknown.append(n)
    return found, unknown


def plan_update(opts: UpdateOptions) -> Plan:
    """Everything the update will do, decided before anything is written (``--dry-run`` prints it)."""
    so = opts.storage_options
    if (opts.metadata is None) == (opts.remove is None):
        raise UpdateError(
            "make-shards update needs exactly one of --metadata ALLOWLIST or --remove KEYS_FILE"
        )
    if opts.workers < 1:
        raise UpdateError(f"--workers must be >= 1, got {opts.workers}")
    if opts.refresh_metadata and opts.metadata is None:
        raise UpdateError("--refresh-metadata needs --metadata (the allowlist holding the new values)")
    if opts.dataset_version is not None and not 0 < len(opts.dataset_version) <= 200:
        raise UpdateError("--dataset-version must be 1 to 200 characters")
    keys_file = read_keys_file(opts.remove, so) if opts.remove is not None else None
    if opts.metadata is not None and not storage.exists(opts.metadata, so):
        raise UpdateError(f"--metadata: allowlist not found: {storage.redact(opts.metadata)}")
    out = load_output(opts.output, so, opts.workers)
    config = out.index["config"] if isinstance(out.index.get("config"), dict) else {}
    key_column = opts.key_column or str(config.get("key_column") or "hash")
    position: dict[str, tuple[int, int]] = {}
    for s, layout in enumerate(out.layouts):
        for i, key in enumerate(layout.keys):
            position[key] = (s, i)
    sample_index = {k: v[0] for k, v in position.items()}

    md = None
    unknown: list[int] = []
    allow: set[str] | None = None
    if keys_file is not None:
        gone, unknown = _matches(keys_file, sample_index)
        source = {"kind": "keys-file", "sha256": keys_file.sha256}
    else:
        from pass_wds.convert.metadata import read_metadata

        assert opts.metadata is not None
        md = read_metadata(opts.metadata, key_column, so)
        safe_rows = {safe_key(k): r for r, k in enumerate(md.keys_array.to_pylist())}
        allow = set(safe_rows)
        gone = {k for k in position if k not in allow}
        source = {"kind": "allowlist", "sha256": _file_sha256(opts.metadata, so), "key_column": key_column}

    total = len(position)
    if gone and len(gone) == total:
        raise UpdateError(
            f"this update would remove every sample of {storage.redact(opts.output)} ({total:,}); "
            "check the file, or delete the output instead"
        )
    if len(gone) * 2 > total and not opts.yes:
        raise UpdateError(
            f"this update would remove {len(gone):,} of {total:,} samples ({len(gone) / total:.0%}) of "
            f"{storage.redact(opts.output)}; if the file is right, pass --yes"
        )

    by_shard: dict[int, list[int]] = {}
    for k in gone:
        s, i = position[k]
        by_shard.setdefault(s, []).append(i)
    refreshed: dict[int, dict[int, bytes]] = {}
    refresh_rows: dict[str, str] = {}
    changed_rows = changed_shards = 0
    if md is not None and (opts.refresh_metadata or opts.dry_run):
        rows = {safe_key(k): r for r, k in enumerate(md.keys_array.to_pylist())}

        def compare(s: int) -> dict[int, bytes]:
            layout = out.layouts[s]
            left = set(by_shard.get(s, []))
            kept = [i for i in range(len(layout)) if i not in left]
            url = storage.join(out.url, out.shardlist[s]["url"])
            changed = {}
            for i, raw in json_members(url, layout, kept, so).items():
                new = md.body(rows[layout.keys[i]])
                if sample_row(raw) != new:
                    changed[i] = with_row(raw, new)
            return changed

        with ThreadPoolExecutor(max_workers=opts.workers, thread_name_prefix="pass-wds-json") as pool:
            for s, changed in enumerate(pool.map(compare, range(len(out.layouts)))):
                if changed:
                    changed_rows += len(changed)
                    changed_shards += 1
                    if opts.refresh_metadata:
                        refreshed[s] = changed
                        for i in changed:
                            refresh_rows[out.layouts[s].keys[i]] = md.body(rows[out.layouts[s].keys[i]])

    edits = []
    R = out.revision + 1
    for s in sorted(set(by_shard) | set(refreshed)):
        layout = out.layouts[s]
        removed = sorted(by_shard.get(s, []))
        slot = _slot(out, s)
        empty = len(removed) == len(layout)
        edits.append(
            ShardEdit(
                position=s,
                old=out.shardlist[s],
                layout=layout,
                removed=removed,
                refreshed=refreshed.get(s, {}),
                new_url=None if empty else revisions.shard_name(out.name, slot, R),
                new_idx=None if empty else revisions.idx_name(out.name, slot, R),
            )
        )
    plan = Plan(
        out,
        opts,
        sorted(gone),
        edits,
        source,
        unknown_lines=unknown,
        changed_rows=changed_rows,
        changed_shards=changed_shards,
        allow_keys=allow,
        refresh_rows=refresh_rows,
    )
    if keys_file is not None:
        plan.listed = {k for _, k in keys_file.lines} | {safe_key(k) for _, k in keys_file.lines}
    plan.errors_dropped = len(_read_jsonl(storage.join(out.url, manifest.ERRORS), so)) - len(
        _errors_after(plan)
    )
    if md is not None:
        plan.without_image = _without_image(plan, md.keys_array.to_pylist())
    plan.digest = _plan_digest(plan)
    return plan


def _slot(out: Output, position: int) -> int:
    """The slot number in a shard's name (``pass-000123.tar``, ``pass-000123-r2.tar`` → 123)."""
    url = out.shardlist[position]["url"]
    stem = url.removeprefix(out.name + "-").removesuffix(".tar").split("-r", 1)[0]
    if not url.startswith(out.name + "-") or not stem.isdigit():
        raise UpdateError(
            f"{storage.redact(out.url)}: shard {url} is not named by make-shards ({out.name}-NNNNNN.tar)"
        )
    return int(stem)


def _without_image(plan: Plan, allow_keys: list[str]) -> list[str]:
    """Allowlist keys that match neither a kept sample nor a rejected input: they need the raw images."""
    kept = {k for layout in plan.out.layouts for k in layout.keys} - set(plan.removed_keys)
    errors = _errors_after(plan)
    rejected = {e.get("key") for e in errors}
    return sorted(k for k in allow_keys if safe_key(k) not in kept and k not in rejected)


def _plan_digest(plan: Plan) -> str:
    """Identifies the update: a rerun with the same digest resumes it, any other discards its leftovers."""
    h = hashlib.sha256()
    for part in (
        "pass-wds-update-v1",
        plan.out.index_sha256,
        json.dumps(plan.source, sort_keys=True),
        json.dumps([[e.position, e.removed, sorted(e.refreshed)] for e in plan.edits]),
        *(plan.refresh_rows[k] for k in sorted(plan.refresh_rows)),
        json.dumps([plan.opts.dataset_version, plan.opts.record_keys, plan.revision]),
    ):
        h.update(part.encode("utf-8") + b"\0")
    return h.hexdigest()


def dry_run_lines(plan: Plan) -> list[str]:
    out, opts = plan.out, plan.opts
    where = storage.redact(out.url)
    total = sum(len(x) for x in out.layouts)
    what = (
        f"keys in the shards that {storage.redact(str(opts.metadata))} lacks"
        if opts.metadata
        else f"listed in {storage.redact(str(opts.remove))}"
    )
    lines = [
        f"dry run: {where} is revision {out.revision} ({len(out.shardlist)} shards, {total:,} samples); "
        f"this update would make revision {plan.revision}",
        f"remove {len(plan.removed_keys):,} samples ({what}) from "
        f"{sum(1 for e in plan.edits if e.removed)} shards",
    ]
    if plan.unknown_lines:
        lines.append(_unknown_line(plan))
    if opts.metadata:
        if opts.refresh_metadata:
            lines.append(
                f"refresh the JSON of {plan.changed_rows:,} kept samples whose metadata changed ({plan.changed_shards} shards)"
            )
        else:
            lines.append(
                f"{plan.changed_rows:,} kept samples in {plan.changed_shards} shards have other metadata in the "
                "allowlist; --refresh-metadata would rewrite those shards too"
            )
    written = sum(plan.new_bytes(e) for e in plan.edits if e.new_url)
    read = sum(e.old["filesize"] for e in plan.edits)
    untouched = len(out.shardlist) - len(plan.edits)
    lines.append(
        f"rewrite {sum(1 for e in plan.edits if e.new_url)} shards ({_mb(written)} written, {_mb(read)} read); "
        f"{untouched} shards untouched"
    )
    fate = "kept (--keep-superseded)" if opts.keep_superseded else "deleted"
    lines.append(
        f"{len(plan.edits)} superseded shards ({_mb(read)}) would be {fate} once index.json is replaced"
    )
    if plan.errors_dropped:
        lines.append(f"drop {plan.errors_dropped:,} records of removed keys from {manifest.ERRORS}")
    if plan.without_image:
        lines.append(_without_image_line(plan))
    lines.append(f"nothing written to {where}")
    return lines


def _unknown_line(plan: Plan) -> str:
    shown = ", ".join(map(str, plan.unknown_lines[:10])) + (" …" if len(plan.unknown_lines) > 10 else "")
    return (
        f"{len(plan.unknown_lines):,} line{'s' if len(plan.unknown_lines) != 1 else ''} of "
        f"{storage.redact(str(plan.opts.remove))} match no sample "
        f"(lines {shown}): already removed, rejected at conversion, or not keys of this output"
    )


def _without_image_line(plan: Plan) -> str:
    assert plan.without_image is not None
    return (
        f"{len(plan.without_image):,} allowlist keys have no sample (listed in {manifest.UNMATCHED}); they need "
        "the raw images: run make-shards with the original inputs"
    )


def _mb(n: int) -> str:
    return f"{n / 1e6:,.1f} MB"


# ------------------------------------------------------------------------------------------------ writing


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


# --------------------------------------------------------------------------------------------- side files


def _errors_after(plan: Plan) -> list[dict[str, Any]]:
    """errors.jsonl without the records of removed keys (a takedown leaves no trace of the key), and in
    allowlist mode without records of inputs the new allowlist no longer names (but for missing-metadata)."""
    records = _read_jsonl(storage.join(plan.out.url, manifest.ERRORS), plan.opts.storage_options)
    removed, listed = set(plan.removed_keys), plan.listed
    keep = []
    for rec in records:
        key = str(rec.get("key", ""))
        sk = safe_key(key)
        if sk in removed or key in listed or sk in listed:
            continue
        if (
            plan.allow_keys is not None
            and rec.get("reason") != reasons.MISSING_METADATA
            and sk not in plan.allow_keys
        ):
            continue
        keep.append(rec)
    return keep


def _side_files_change(plan: Plan) -> bool:
    """Whether errors.jsonl or metadata_without_image.txt would change although no shard does (a takedown of a
    key that was rejected at conversion must still remove its errors.jsonl record)."""
    so, url = plan.opts.storage_options, plan.out.url
    if plan.errors_dropped:
        return True
    if plan.without_image is None:
        return False
    try:
        current = storage.read_text(storage.join(url, manifest.UNMATCHED), so).split("\n")
    except FileNotFoundError:
        current = []
    return [k for k in current if k] != plan.without_image


def _read_jsonl(url: str, so: dict[str, Any]) -> list[dict[str, Any]]:
    try:
        text = storage.read_text(url, so)
    except FileNotFoundError:
        return []
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def _side_files(plan: Plan, shardlist: list[dict[str, Any]], index: dict[str, Any]) -> dict[str, bytes]:
    """The side files of the new revision, from the old ones (never from the raw inputs)."""
    so, url = plan.opts.storage_options, plan.out.url
    removed = set(plan.removed_keys)
    files: dict[str, bytes] = {}
    errors = _errors_after(plan)
    files[manifest.ERRORS] = manifest.jsonl(errors)

    try:
        text = storage.read_text(storage.join(url, manifest.ATTRIBUTION), so)
    except FileNotFoundError:
        text = ""
    rows = list(csv.reader(io.StringIO(text)))
    if rows:
        header, body = rows[0], rows[1:]
        if plan.refresh_rows:
            from pass_wds.convert.writing import attribution_rows

            columns = tuple(header[1:])
            fresh = {r[0]: r for r in attribution_rows(sorted(plan.refresh_rows.items()), columns)}
            body = [fresh.get(r[0], r) for r in body]
        files[manifest.ATTRIBUTION] = manifest.attribution_csv(
            header[1:], (r for r in body if r[0] not in removed)
        )

    if plan.without_image is not None:
        unmatched = plan.without_image
    else:
        try:
            old = storage.read_text(storage.join(url, manifest.UNMATCHED), so).splitlines()
        except FileNotFoundError:
            old = []
        unmatched = [k for k in old if k and k not in plan.listed and safe_key(k) not in removed]
    files[manifest.UNMATCHED] = "".join(k + "\n" for k in unmatched).encode()

    stats = read_json(storage.join(url, manifest.STATS), so) or {}
    sizes = [e["filesize"] for e in shardlist]
    counts = [e["nsamples"] for e in shardlist]
    rejected = Counter(str(e.get("reason")) for e in errors)
    stats.update(
        samples_written=sum(counts),
        shards=len(shardlist),
        rejected=dict(sorted(rejected.items())),
        rejected_total=sum(rejected.values()),
        metadata_without_image=len(unmatched),
    )
    if plan.allow_keys is not None:
        stats["metadata_rows"] = len(plan.allow_keys)
    stats.setdefault("bytes", {})["output"] = sum(sizes)
    target = (stats.get("shard_bytes") or {}).get("target")
    stats["shard_bytes"] = {**manifest.size_spread(sizes), "target": target}
    stats["shard_samples"] = {"min": min(counts, default=0), "max": max(counts, default=0)}
    stats["revision"] = index["revision"]
    stats["removed_by_revisions"] = sum(h["removed"]["count"] for h in index["history"])
    files[manifest.STATS] = manifest.dumps(stats)

    doc = read_json(storage.join(url, manifest.CROISSANT), so)
    if doc is not None:
        files[manifest.CROISSANT] = croissant.dumps(croissant.with_shards(doc, shardlist))
    return files


# ------------------------------------------------------------------------------------------------- apply


def _history_date() -> str:
    """The date of a revision: ``SOURCE_DATE_EPOCH`` (the reproducible-builds convention) when set, else now."""
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    t = int(epoch) if epoch and epoch.isdigit() else int(time.time())
    return datetime.datetime.fromtimestamp(t, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def new_index(plan: Plan, written: dict[int, Written], date: str) -> dict[str, Any]:
    """The manifest of the new revision: every field of the old one kept, the shard list, totals and plan
    digest replaced, the lineage extended."""
    old = plan.out.index
    edits = {e.position: e for e in plan.edits}
    shardlist = []
    for s, entry in enumerate(old["shardlist"]):
        e = edits.get(s)
        if e is None:
            shardlist.append(entry)
        elif e.new_url is not None:
            shardlist.append(written[s].entry(e))
    index = dict(old)
    index["shardlist"] = shardlist
    index["totals"] = {
        "shards": len(shardlist),
        "samples": sum(e["nsamples"] for e in shardlist),
        "bytes": sum(e["filesize"] for e in shardlist),
    }
    index["plan_digest"] = hashlib.sha256(f"{old['plan_digest']}\0{plan.digest}".encode()).hexdigest()
    sizes = lambda e, i: sum(m.size for m in e.layout.members[i])  # noqa: E731
    removed: dict[str, Any] = {
        "count": len(plan.removed_keys),
        "sha256": revisions.keys_digest(plan.removed_keys),
    }
    if plan.opts.record_keys:
        removed["keys"] = plan.removed_keys
    entry = {
        "revision": plan.revision,
        "date": date,
        "dataset_version": plan.opts.dataset_version,
        "previous_index_sha256": plan.out.index_sha256,
        "previous_plan_digest": old["plan_digest"],
        "source": plan.source,
        "removed": removed,
        "refreshed": sum(len(e.refreshed) for e in plan.edits),
        "errors_dropped": plan.errors_dropped,
        "replaced": [
            {
                "position": e.position,
                "old": {k: e.old[k] for k in ("url", "idx", "nsamples", "filesize", "sha256")},
                "new": e.new_url,
                "removed": [[i, sizes(e, i)] for i in e.removed],
                "refreshed": [[i, sizes(e, i)] for i in sorted(e.refreshed)],
            }
            for e in plan.edits
        ],
        "created_by": f"pass-wds {__version__}",
    }
    index["revision"] = plan.revision
    if plan.opts.dataset_version is not None:
        index["dataset_version"] = plan.opts.dataset_version
    else:
        index.setdefault("dataset_version", None)
    index["history"] = [*old.get("history", []), entry]
    return index


@dataclass
class UpdateSummary:
    lines: list[str]
    revision: int
    rewritten: int = 0
    bytes_written: int = 0
    bytes_deleted: int = 0


def _state_url(out: str, name: str) -> str:
    return storage.join(out, STATE, name)


def _shard_record(position: int) -> str:
    return f"update-{position:06d}.json"


def run_update(opts: UpdateOptions) -> UpdateSummary:
    """Apply (or, with ``dry_run``, describe) an update; see the module docstring for the protocol."""
    from pass_wds.convert.options import ConvertConfig
    from pass_wds.convert.output import OutputLock, check_output_writable  # the output lock of make-shards

    so = opts.storage_options
    storage.remember_secrets(so)
    if opts.dry_run:
        return UpdateSummary(dry_run_lines(plan_update(opts)), revision=-1)
    if not storage.exists(storage.join(opts.output, manifest.INDEX), so):  # before the lock creates anything
        raise UpdateError(
            f"{storage.redact(opts.output)} is not a pass-wds output (no {manifest.INDEX}, or unfinished)"
        )
    check_output_writable(opts.output, so)
    if storage.exists(_state_url(opts.output, "plan.json"), so):
        raise UpdateError(
            f"{storage.redact(opts.output)} holds an unfinished make-shards run (_state/plan.json); "
            "rerun that make-shards command to finish it first"
        )
    crash = _Crash()
    with OutputLock(ConvertConfig(output=opts.output, storage_options=so), shared=False):
        finished = _finish_interrupted(opts, crash)
        plan = plan_update(opts)
        if not plan.edits and not _side_files_change(plan):
            summary = UpdateSummary(_nothing_lines(plan), revision=plan.out.revision)
        else:
            summary = _apply(plan, crash)
        summary.lines[:0] = finished
        _remove_state_folder(opts)
    return summary


def _nothing_lines(plan: Plan) -> list[str]:
    lines = [
        f"{storage.redact(plan.out.url)} (revision {plan.out.revision}) holds no sample to remove"
        + (" or refresh" if plan.opts.refresh_metadata else "")
        + "; nothing to do"
    ]
    if plan.unknown_lines:
        lines.append(_unknown_line(plan))
    if plan.without_image:
        lines.append(_without_image_line(plan))
    return lines


def _finish_interrupted(opts: UpdateOptions, crash: Callable[[str], None]) -> list[str]:
    """An earlier update was killed: if it had replaced index.json, finish its deletions; if the manifest is
    still the one it started from, leave its new shards for :func:`_apply` to reuse (same update) or remove;
    if the manifest is neither, nothing references its new shards: remove them."""
    so, out = opts.storage_options, opts.output
    state = read_json(_state_url(out, STATE_FILE), so)
    if state is None:
        return []
    try:
        raw = storage.read_bytes(storage.join(out, manifest.INDEX), so)
    except FileNotFoundError:
        return []
    current = hashlib.sha256(raw).hexdigest()
    if current == state.get("index_sha256_after"):
        _delete_superseded(opts, state, crash)
        _clear_state(opts, state)
        return [f"finished the interrupted update to revision {state.get('revision')}"]
    if current != state.get("from_index_sha256"):
        for name in set(state.get("new_names", [])) - manifest.listed_names(json.loads(raw)):
            storage.remove(storage.join(out, name), so)
        _clear_state(opts, state)
    return []


def _clear_state(opts: UpdateOptions, state: dict[str, Any]) -> None:
    """Remove this update's records (the lock stays until the run ends)."""
    so, out = opts.storage_options, opts.output
    records = {_shard_record(int(p)) for p in state.get("positions", [])}
    for name in records:
        storage.remove(_state_url(out, name), so)
    storage.remove(_state_url(out, STATE_FILE), so)
    _remove_state_temp_files(opts, records | {STATE_FILE})


def _remove_state_temp_files(opts: UpdateOptions, names: set[str]) -> None:
    """A kill while another thread was writing a record leaves its temp file (only ours are named)."""
    storage.remove_temp_files(storage.join(opts.output, STATE), opts.storage_options, names=names)


def _remove_state_folder(opts: UpdateOptions) -> None:
    """A finished output has no ``_state``: remove it when only the lock is left in it (local outputs; on an
    object store the lock object goes when the lock is released and the prefix disappears with it)."""
    so, out = opts.storage_options, opts.output
    if not storage.is_local(out):
        return
    state = storage.join(out, STATE)
    if set(storage.listdir(state, so)) <= {LOCK}:
        storage.remove(state, so, recursive=True)


def _apply(plan: Plan, crash: Callable[[str], None]) -> UpdateSummary:
    opts, so, out = plan.opts, plan.opts.storage_options, plan.out.url
    new_names = [n for e in plan.edits if e.new_url for n in (e.new_url, e.new_idx)]
    superseded = [n for e in plan.edits for n in (e.old["url"], e.old["idx"])]
    state = read_json(_state_url(out, STATE_FILE), so)
    ours: set[str] = set()
    if state is not None and state.get("from_index_sha256") == plan.out.index_sha256:
        ours = set(state.get("new_names", []))
        if state.get("digest") != plan.digest:  # another update was begun from this manifest: drop its shards
            for name in ours:
                storage.remove(storage.join(out, name), so)
            _clear_state(opts, state)
            ours, state = set(), None
    listing = set(storage.listdir(out, so))
    clash = sorted(n for n in new_names if n in listing and n not in ours)
    if clash:
        raise UpdateError(
            f"{storage.redact(out)} holds {', '.join(clash[:3])}, which pass-wds did not write but this update "
            "would write; move it away"
        )
    if ours:  # temp files (and, on S3, incomplete uploads) of the killed run's new shards and records
        storage.remove_temp_files(out, so, names=ours)
        _remove_state_temp_files(opts, {_shard_record(e.position) for e in plan.edits} | {STATE_FILE})
    if state is None:
        state = {
            "digest": plan.digest,
            "from_index_sha256": plan.out.index_sha256,
            "revision": plan.revision,
            "date": _history_date(),
            "new_names": new_names,
            "superseded": superseded,
            "positions": [e.position for e in plan.edits],
        }
        storage.write_bytes(_state_url(out, STATE_FILE), manifest.dumps(state), so)
        crash("state-written")
    date = str(state["date"])

    written: dict[int, Written] = {}
    todo = []
    for e in plan.edits:
        if e.new_url is None:
            continue
        rec = read_json(_state_url(out, _shard_record(e.position)), so)
        if (
            rec is not None
            and rec.get("digest") == plan.digest
            and e.new_url in listing
            and e.new_idx in listing
        ):
            w = Written(**rec["written"])
            if storage.file_size(storage.join(out, e.new_url), so) == w.filesize:
                written[e.position] = w
                continue
        todo.append(e)

    def one(e: ShardEdit) -> Written:
        w = rewrite_shard(e, out, so, crash)
        storage.write_bytes(
            _state_url(out, _shard_record(e.position)),
            json.dumps({"digest": plan.digest, "written": w.__dict__}).encode(),
            so,
        )
        crash("shard-done")
        return w

    with ThreadPoolExecutor(max_workers=opts.workers, thread_name_prefix="pass-wds-update") as pool:
        for k, (e, w) in enumerate(zip(todo, pool.map(one, todo), strict=True), 1):
            written[w.position] = w
            log.info(
                "rewrote %s as %s (%d samples; %d/%d)", e.old["url"], e.new_url, w.nsamples, k, len(todo)
            )

    index = new_index(plan, written, date)
    for name, data in _side_files(plan, index["shardlist"], index).items():
        storage.write_bytes(storage.join(out, name), data, so)
    crash("side-files")
    raw = manifest.dumps(index)
    state["index_sha256_after"] = hashlib.sha256(raw).hexdigest()
    storage.write_bytes(_state_url(out, STATE_FILE), manifest.dumps(state), so)
    storage.write_bytes(
        storage.join(out, manifest.INDEX), raw, so
    )  # the switch: readers see the new revision
    crash("index-written")
    deleted = _delete_superseded(opts, state, crash)
    _clear_state(opts, state)
    rewritten = [e for e in plan.edits if e.new_url]
    bytes_written = sum(written[e.position].filesize for e in rewritten)
    lines = [
        f"revision {plan.revision} of {storage.redact(out)}: removed {len(plan.removed_keys):,} samples"
        + (f", refreshed {sum(len(e.refreshed) for e in plan.edits):,}" if opts.refresh_metadata else "")
        + f"; rewrote {len(rewritten)} of {len(plan.out.shardlist)} shards ({_mb(bytes_written)}), "
        f"{index['totals']['samples']:,} samples in {index['totals']['shards']} shards",
        (
            f"kept {len(plan.edits)} superseded shards (--keep-superseded); the next update without it deletes them"
            if opts.keep_superseded
            else f"deleted {len(plan.edits)} superseded shards ({_mb(deleted)})"
        ),
    ]
    if plan.errors_dropped:
        lines.append(f"dropped {plan.errors_dropped:,} records of removed keys from {manifest.ERRORS}")
    if plan.unknown_lines:
        lines.append(_unknown_line(plan))
    if plan.without_image:
        lines.append(_without_image_line(plan))
    return UpdateSummary(lines, plan.revision, len(rewritten), bytes_written, deleted)


def _delete_superseded(opts: UpdateOptions, state: dict[str, Any], crash: Callable[[str], None]) -> int:
    """Delete what the new manifest no longer lists: this update's superseded shards (unless
    ``--keep-superseded``) and those earlier revisions kept. Only names the history lists are touched."""
    so, out = opts.storage_options, opts.output
    index = manifest.load_index(out, so)
    names = revisions.superseded_names(index)
    if opts.keep_superseded:
        names -= set(state.get("superseded", []))
    present = set(storage.listdir(out, so))
    deleted = 0
    for name in sorted(names & present):
        url = storage.join(out, name)
        deleted += storage.file_size(url, so)
        storage.remove(url, so)
        crash("mid-delete")
    return deleted


__all__ = ["CRASH_ENV", "UpdateError", "UpdateOptions", "UpdateSummary", "plan_update", "run_update"]
