"""What a revision of an output changes, decided before anything is written (``make-shards update``).

The removed keys are the shard keys a new allowlist lacks (``--metadata``) or those a keys file lists
(``--remove``); with ``--refresh-metadata`` also the kept samples whose allowlist row changed. The plan names
every shard to rewrite (slot, samples left out, JSON members replaced), the new names
(:mod:`pass_wds.format.revisions`), the side-file changes and a digest that identifies the update for a
resumed run. ``--dry-run`` prints it (:func:`dry_run_lines`); :mod:`.update` applies it. Only manifests,
``.idx`` files, the allowlist or keys file and (for ``--refresh-metadata`` and ``--dry-run``) the samples' JSON
members are read.
"""

from __future__ import annotations

import hashlib
import json
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from pass_wds import storage
from pass_wds.errors import ConfigError, InputError
from pass_wds.format import manifest, reasons, revisions
from pass_wds.format.idx import ShardIndex, parse_idx
from pass_wds.format.keys import key_of, safe_key
from pass_wds.format.samples import sample_row, with_row
from pass_wds.format.tar import BLOCK, END_OF_ARCHIVE, padded
from pass_wds.verify import json_members

STATE_FILE = "update.json"


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
    purge_superseded: bool = (
        False  # alone: delete the shards earlier revisions kept (--keep-superseded), nothing else
    )
    record_keys: bool = False
    yes: bool = False
    dry_run: bool = False
    workers: int = 4
    storage_options: dict[str, Any] = field(default_factory=dict)


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
        raise ConfigError(f"{where} is not a pass-wds output (no {manifest.INDEX}, or unfinished)") from None
    index = manifest.parse_index(raw, storage.join(url, manifest.INDEX), require_filesize=True)
    if not isinstance(index.get("plan_digest"), str) or not isinstance(index.get("name"), str):
        raise ConfigError(f"{where}: {manifest.INDEX} was not written by make-shards (no plan_digest)")
    for i, entry in enumerate(index["shardlist"]):
        for k in ("url", "idx"):
            if not isinstance(entry.get(k), str) or "/" in entry[k] or manifest.is_external(entry[k]):
                raise ConfigError(f"{where}: shardlist[{i}].{k} is not a shard of this folder")
        if not isinstance(entry.get("sha256"), str):
            raise ConfigError(f"{where}: shardlist[{i}] has no sha256 (not a make-shards output)")

    def layout(entry: dict[str, Any]) -> ShardIndex:
        idx_url = storage.join(url, entry["idx"])
        try:
            parsed = parse_idx(storage.read_text(idx_url, so), idx_url)
        except FileNotFoundError:
            raise ConfigError(f"{where}: {entry['idx']} is missing; run `pass-wds verify {where}`") from None
        if len(parsed) != entry["nsamples"] or not parsed.named:
            raise ConfigError(f"{where}: {entry['idx']} does not match index.json; run `pass-wds verify`")
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
        raise InputError(f"--remove: keys file not found: {shown}") from None
    if b"\0" in raw:
        raise InputError(f"--remove: {shown} is not a text file of keys (it holds NUL bytes)")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise InputError(
            f"--remove: {shown} is not a text file of keys (byte {e.start} is not UTF-8)"
        ) from None
    lines = [(n, s) for n, line in enumerate(text.splitlines(), 1) if (s := line.strip()) and s[0] != "#"]
    if not lines:
        raise InputError(f"--remove: {shown} lists no keys")
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


def check_options(opts: UpdateOptions) -> None:
    """The option combinations, before anything is read."""
    if opts.metadata is not None and opts.remove is not None:
        raise ConfigError(
            "make-shards update takes one of --metadata ALLOWLIST or --remove KEYS_FILE, not both"
        )
    if opts.metadata is None and opts.remove is None and not opts.purge_superseded:
        raise ConfigError(
            "make-shards update needs --metadata ALLOWLIST or --remove KEYS_FILE (or --purge-superseded alone)"
        )
    if opts.purge_superseded and opts.keep_superseded:
        raise ConfigError("--purge-superseded and --keep-superseded exclude each other")


def is_purge_only(opts: UpdateOptions) -> bool:
    return opts.purge_superseded and opts.metadata is None and opts.remove is None


def plan_update(opts: UpdateOptions) -> Plan:
    """Everything the update will do, decided before anything is written (``--dry-run`` prints it)."""
    so = opts.storage_options
    check_options(opts)
    if opts.workers < 1:
        raise ConfigError(f"--workers must be >= 1, got {opts.workers}")
    if opts.refresh_metadata and opts.metadata is None:
        raise ConfigError("--refresh-metadata needs --metadata (the allowlist holding the new values)")
    if opts.dataset_version is not None and not 0 < len(opts.dataset_version) <= 200:
        raise ConfigError("--dataset-version must be 1 to 200 characters")
    keys_file = read_keys_file(opts.remove, so) if opts.remove is not None else None
    if opts.metadata is not None and not storage.exists(opts.metadata, so):
        raise InputError(f"--metadata: allowlist not found: {storage.redact(opts.metadata)}")
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
        raise InputError(
            f"this update would remove every sample of {storage.redact(opts.output)} ({total:,}); "
            "check the file, or delete the output instead"
        )
    if len(gone) * 2 > total and not opts.yes:
        raise InputError(
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
    plan.errors_dropped = len(read_jsonl(storage.join(out.url, manifest.ERRORS), so)) - len(
        errors_after(plan)
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
        raise InputError(
            f"{storage.redact(out.url)}: shard {url} is not named by make-shards ({out.name}-NNNNNN.tar)"
        )
    return int(stem)


def _without_image(plan: Plan, allow_keys: list[str]) -> list[str]:
    """Allowlist keys that match neither a kept sample nor a rejected input: they need the raw images."""
    kept = {k for layout in plan.out.layouts for k in layout.keys} - set(plan.removed_keys)
    errors = errors_after(plan)
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
        lines.append(unknown_line(plan))
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
        f"rewrite {sum(1 for e in plan.edits if e.new_url)} shards ({mb(written)} written, {mb(read)} read); "
        f"{untouched} shards untouched"
    )
    if plan.edits:
        names = [e.old["url"] for e in plan.edits]
        shown = ", ".join(names[:8]) + (f" and {len(names) - 8} more" if len(names) > 8 else "")
        emptied = sum(1 for e in plan.edits if e.new_url is None)
        lines.append(
            f"affected shards: {shown}" + (f" ({emptied} emptied: they leave the list)" if emptied else "")
        )
    fate = "kept (--keep-superseded)" if opts.keep_superseded else "deleted"
    lines.append(
        f"{len(plan.edits)} superseded shards ({mb(read)}) would be {fate} once index.json is replaced"
    )
    if plan.errors_dropped:
        lines.append(f"drop {plan.errors_dropped:,} records of removed keys from {manifest.ERRORS}")
    if plan.without_image:
        lines.append(without_image_line(plan))
    lines.append(f"nothing written to {where}")
    return lines


def unknown_line(plan: Plan) -> str:
    shown = ", ".join(map(str, plan.unknown_lines[:10])) + (" …" if len(plan.unknown_lines) > 10 else "")
    return (
        f"{len(plan.unknown_lines):,} line{'s' if len(plan.unknown_lines) != 1 else ''} of "
        f"{storage.redact(str(plan.opts.remove))} match no sample "
        f"(lines {shown}): already removed, rejected at conversion, or not keys of this output"
    )


def without_image_line(plan: Plan) -> str:
    assert plan.without_image is not None
    return (
        f"{len(plan.without_image):,} allowlist keys have no sample (listed in {manifest.UNMATCHED}); they need "
        "the raw images: run make-shards with the original inputs"
    )


def mb(n: int) -> str:
    return f"{n / 1e6:,.1f} MB"


# --------------------------------------------------------------------------------------------- side files


def errors_after(plan: Plan) -> list[dict[str, Any]]:
    """errors.jsonl without the records of removed keys (a takedown leaves no trace of the key), and in
    allowlist mode without records of inputs the new allowlist no longer names (but for missing-metadata)."""
    records = read_jsonl(storage.join(plan.out.url, manifest.ERRORS), plan.opts.storage_options)
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


def side_files_change(plan: Plan) -> bool:
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


def read_jsonl(url: str, so: dict[str, Any]) -> list[dict[str, Any]]:
    try:
        text = storage.read_text(url, so)
    except FileNotFoundError:
        return []
    return [json.loads(line) for line in text.splitlines() if line.strip()]
