"""``make-shards update``: apply a revision (:mod:`.revision` plans it), rewriting only what must change.

Each shard holding a removed sample is rebuilt **from the shard itself**: its kept samples' tar blocks are
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
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from pass_wds import __version__, storage
from pass_wds.convert.output import LOCK, STATE, read_json
from pass_wds.convert.revision import (
    Plan,
    ShardEdit,
    UpdateOptions,
    check_options,
    dry_run_lines,
    errors_after,
    is_purge_only,
    load_output,
    mb,
    plan_update,
    side_files_change,
    unknown_line,
    without_image_line,
)
from pass_wds.convert.rewrite import CRASH_ENV, Crash, Written, rewrite_shard
from pass_wds.errors import ConfigError
from pass_wds.format import croissant, manifest, revisions
from pass_wds.format.keys import safe_key
from pass_wds.storage.log import get_logger

log = get_logger("pass_wds.make_shards")

STATE_FILE = "update.json"


def _side_files(plan: Plan, shardlist: list[dict[str, Any]], index: dict[str, Any]) -> dict[str, bytes]:
    """The side files of the new revision, from the old ones (never from the raw inputs)."""
    so, url = plan.opts.storage_options, plan.out.url
    removed = set(plan.removed_keys)
    files: dict[str, bytes] = {}
    errors = errors_after(plan)
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
    check_options(opts)
    if opts.dry_run and is_purge_only(opts):
        index = load_output(opts.output, so, opts.workers).index
        names = sorted(revisions.superseded_names(index) & set(storage.listdir(opts.output, so)))
        return UpdateSummary(
            [f"would delete {len(names)} superseded files: {', '.join(names[:8])}" + (" …" if len(names) > 8 else ""),
             f"nothing written to {storage.redact(opts.output)}"],
            revision=-1,
        )  # fmt: skip
    if opts.dry_run:
        return UpdateSummary(dry_run_lines(plan_update(opts)), revision=-1)
    if not storage.exists(storage.join(opts.output, manifest.INDEX), so):  # before the lock creates anything
        raise ConfigError(
            f"{storage.redact(opts.output)} is not a pass-wds output (no {manifest.INDEX}, or unfinished)"
        )
    check_output_writable(opts.output, so)
    if storage.exists(_state_url(opts.output, "plan.json"), so):
        raise ConfigError(
            f"{storage.redact(opts.output)} holds an unfinished make-shards run (_state/plan.json); "
            "rerun that make-shards command to finish it first"
        )
    crash = Crash()
    with OutputLock(ConvertConfig(output=opts.output, storage_options=so), shared=False):
        finished = _finish_interrupted(opts, crash)
        if is_purge_only(opts):
            load_output(opts.output, so, opts.workers)  # a pass-wds output, whole
            deleted = _delete_superseded(opts, {}, crash)
            summary = UpdateSummary(
                [*finished, f"deleted superseded shards kept by earlier revisions ({mb(deleted)})"], -1
            )
            _remove_state_folder(opts)
            return summary
        plan = plan_update(opts)
        if not plan.edits and not side_files_change(plan):
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
        lines.append(unknown_line(plan))
    if plan.without_image:
        lines.append(without_image_line(plan))
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
        raise ConfigError(
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
        + f"; rewrote {len(rewritten)} of {len(plan.out.shardlist)} shards ({mb(bytes_written)}), "
        f"{index['totals']['samples']:,} samples in {index['totals']['shards']} shards",
        (
            f"kept {len(plan.edits)} superseded shards (--keep-superseded); the next update without it deletes them"
            if opts.keep_superseded
            else f"deleted {len(plan.edits)} superseded shards ({mb(deleted)})"
        ),
    ]
    if plan.errors_dropped:
        lines.append(f"dropped {plan.errors_dropped:,} records of removed keys from {manifest.ERRORS}")
    if plan.unknown_lines:
        lines.append(unknown_line(plan))
    if plan.without_image:
        lines.append(without_image_line(plan))
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


__all__ = ["CRASH_ENV", "UpdateOptions", "UpdateSummary", "plan_update", "run_update"]
