"""Issue 9 item 6: a manifest cannot point outside its dataset, and every manifest is validated before use."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from servers import HttpServer
from shardkit import all_keys, write_shards

from pass_wds.format.errors import ShardError
from pass_wds.format.manifest import ManifestError
from pass_wds.loading import make_loader

PASS_WDS = [sys.executable, "-m", "pass_wds.cli"]
SECRET_LINE = "TOPSECRET-first-line-of-a-private-file"


def cli(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*PASS_WDS, *map(str, args)], capture_output=True, text=True, timeout=120)


def one_line_error(r: subprocess.CompletedProcess[str], *needles: str) -> str:
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    assert "Traceback" not in r.stderr, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    for n in needles:
        assert n in lines[0], (n, lines[0])
    return lines[0]


def keys(loader: Any) -> list[str]:
    return [k for batch in loader for k in batch["__key__"]]


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    out = tmp_path / "data"
    write_shards(out, [4, 4])
    return out


@pytest.fixture
def private(tmp_path: Path) -> Path:
    """A file outside the dataset that a hostile manifest tries to make pass-wds read."""
    p = tmp_path / "private.txt"
    p.write_text(SECRET_LINE + "\nsecond line\n")
    return p


def edit(out: Path, fn: Any) -> Path:
    doc = json.loads((out / "index.json").read_text())
    fn(doc)
    (out / "index.json").write_text(json.dumps(doc))
    return out / "index.json"


def set_entry(field: str, value: Any, i: int = 0) -> Any:
    return lambda doc: doc["shardlist"][i].__setitem__(field, value)


ESCAPES = [
    "../data2/shard-000000.tar",
    "/abs/shard-000000.tar",
    "file:///etc/hostname",
    "http://127.0.0.1:9/x.tar",
]


# ------------------------------------------------------------------------------------------- containment


@pytest.mark.parametrize("url", ESCAPES)
def test_loader_refuses_shard_urls_outside_the_dataset(dataset: Path, url: str) -> None:
    index = edit(dataset, set_entry("url", url))
    with pytest.raises(ManifestError, match=r"shardlist\[0\]\.url.*allow_external_urls"):
        make_loader(str(index), batch_size=2, num_workers=0)


@pytest.mark.parametrize("field", ["url", "idx"])
def test_dotdot_escapes_are_refused_everywhere(dataset: Path, private: Path, field: str) -> None:
    index = edit(dataset, set_entry(field, "../private.txt"))
    with pytest.raises(ManifestError, match=rf"shardlist\[0\]\.{field}"):
        make_loader(str(index), batch_size=2, num_workers=0)
    for cmd in ("verify", "inspect", "urls"):
        line = one_line_error(cli(cmd, index), f"shardlist[0].{field}", "--allow-external-urls")
        assert SECRET_LINE not in line


def test_a_remote_manifest_cannot_make_the_loader_read_local_files(
    dataset: Path, private: Path, http_server: HttpServer
) -> None:
    """A hostile index.json on a web server lists a local path as shard and as .idx."""
    www = http_server.root
    shutil.copytree(dataset, www / "d")
    edit(www / "d", lambda doc: doc["shardlist"][0].update(url=str(private), idx=str(private)))
    src = f"{http_server.url}/d/index.json"
    with pytest.raises(ManifestError, match=r"shardlist\[0\]\.url") as e:
        keys(make_loader(src, batch_size=2, num_workers=0))
    assert SECRET_LINE not in str(e.value)
    edit(www / "d", lambda doc: doc["shardlist"][0].update(url="file://" + str(private)))
    with pytest.raises(ManifestError):
        keys(make_loader(src, batch_size=2, num_workers=0))


def test_errors_never_echo_the_content_of_a_file_pointed_at(dataset: Path, private: Path) -> None:
    """Even with the opt-in, a non-index file used as .idx is described, not quoted."""
    index = edit(dataset, set_entry("idx", str(private)))
    with pytest.raises(ShardError) as e:
        keys(make_loader(str(index), batch_size=2, num_workers=0, allow_external_urls=True))
    assert SECRET_LINE not in str(e.value) and "TOPSECRET" not in str(e.value)


def test_absolute_urls_work_with_the_opt_in(dataset: Path, tmp_path: Path) -> None:
    other = tmp_path / "elsewhere"
    shutil.move(str(dataset / "shard-000001.tar"), other.with_suffix(".tar"))
    shutil.move(str(dataset / "shard-000001.idx"), other.with_suffix(".idx"))
    index = edit(
        dataset,
        lambda doc: doc["shardlist"][1].update(
            url=str(other.with_suffix(".tar")), idx=str(other.with_suffix(".idx"))
        ),
    )
    with pytest.raises(ManifestError):
        make_loader(str(index), batch_size=2, num_workers=0)
    got = keys(make_loader(str(index), batch_size=2, num_workers=0, allow_external_urls=True, shuffle=False))
    assert sorted(got) == all_keys([4, 4])
    one_line_error(cli("urls", index), "shardlist[1].url")
    r = cli("urls", index, "--allow-external-urls")
    assert r.returncode == 0 and r.stdout.splitlines()[1] == str(other.with_suffix(".tar")), r.stderr
    r = cli("verify", index, "--allow-external-urls")
    assert r.returncode == 0, r.stdout + r.stderr
    assert cli("inspect", index, "--allow-external-urls").returncode == 0
    r = cli("bench", index, "--batches", "1", "--batch-size", "2", "--workers", "0")
    one_line_error(r, "shardlist[1].url")


def test_relative_subfolders_stay_allowed(dataset: Path) -> None:
    (dataset / "sub").mkdir()
    for ext in ("tar", "idx"):
        shutil.move(str(dataset / f"shard-000000.{ext}"), dataset / "sub" / f"shard-000000.{ext}")
    index = edit(
        dataset,
        lambda doc: doc["shardlist"][0].update(url="sub/shard-000000.tar", idx="sub/shard-000000.idx"),
    )
    assert sorted(keys(make_loader(str(index), batch_size=2, num_workers=0))) == all_keys([4, 4])
    assert cli("verify", index).returncode == 0


# -------------------------------------------------------------------------------------------- validation

BAD = [
    ("kind", lambda d: d.__setitem__("__kind__", "something-else"), "__kind__"),
    ("no shardlist", lambda d: d.pop("shardlist"), "shardlist"),
    ("shardlist not a list", lambda d: d.__setitem__("shardlist", {"a": 1}), "shardlist"),
    ("entry not an object", lambda d: d["shardlist"].__setitem__(0, "x.tar"), "shardlist[0]"),
    ("no url", lambda d: d["shardlist"][0].pop("url"), "shardlist[0].url"),
    ("url not text", set_entry("url", 7), "shardlist[0].url"),
    ("no nsamples", lambda d: d["shardlist"][1].pop("nsamples"), "shardlist[1].nsamples"),
    ("nsamples text", set_entry("nsamples", "4"), "shardlist[0].nsamples"),
    ("nsamples float", set_entry("nsamples", 4.5), "shardlist[0].nsamples"),
    ("nsamples negative", set_entry("nsamples", -1), "shardlist[0].nsamples"),
    ("nsamples bool", set_entry("nsamples", True), "shardlist[0].nsamples"),
    ("nsamples huge", set_entry("nsamples", 10**10), "shardlist[0].nsamples"),
    ("filesize negative", set_entry("filesize", -5), "shardlist[0].filesize"),
    ("filesize text", set_entry("filesize", "big"), "shardlist[0].filesize"),
    ("sha256 not hex", set_entry("sha256", 12), "shardlist[0].sha256"),
    ("idx not text", set_entry("idx", ["a"]), "shardlist[0].idx"),
]


@pytest.mark.parametrize(
    ("n", "what", "fn", "field"), [(i, *b) for i, b in enumerate(BAD)], ids=[b[0] for b in BAD]
)
def test_malformed_manifests_name_the_field(dataset: Path, n: int, what: str, fn: Any, field: str) -> None:
    index = edit(dataset, fn)
    with pytest.raises(ManifestError) as e:
        make_loader(str(index), batch_size=2, num_workers=0)
    assert field in str(e.value), (what, str(e.value))
    assert isinstance(e.value, ShardError) and isinstance(e.value, ValueError)
    one_line_error(cli(("verify", "inspect", "urls")[n % 3], index), field)  # all three share one reader


def test_not_json_and_not_an_object(dataset: Path) -> None:
    (dataset / "index.json").write_text(SECRET_LINE + "\n")
    with pytest.raises(ManifestError) as e:
        make_loader(str(dataset / "index.json"), batch_size=2, num_workers=0)
    assert SECRET_LINE not in str(e.value)
    assert SECRET_LINE not in one_line_error(cli("verify", dataset), "index.json")
    (dataset / "index.json").write_text("[1, 2]")
    with pytest.raises(ManifestError, match="object"):
        make_loader(str(dataset / "index.json"), batch_size=2, num_workers=0)
    one_line_error(cli("inspect", dataset), "index.json")


def test_a_huge_count_with_a_plausible_size_is_refused_before_planning(dataset: Path) -> None:
    """75 GB of planning arrays from one number: counts are checked against the shard's bytes."""
    index = edit(dataset, lambda d: d["shardlist"][0].update(nsamples=10**10, filesize=10**13))
    with pytest.raises(ManifestError, match=r"shardlist\[0\]\.nsamples"):
        make_loader(str(index), batch_size=2, num_workers=0)
    index = edit(dataset, lambda d: d["shardlist"][0].update(nsamples=100, filesize=4096))
    with pytest.raises(ManifestError, match=r"shardlist\[0\]\.nsamples"):
        make_loader(str(index), batch_size=2, num_workers=0)


BOUNDED = """
import os, resource, sys
from pass_wds.loading import make_loader
pages = int(open("/proc/self/statm").read().split()[0]) * resource.getpagesize()
limit = pages + (2 << 30)  # 2 GiB more than the imports took: the hostile plan alone wanted 7.45 GiB
resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
try:
    len(make_loader(sys.argv[1], batch_size=2, num_workers=0, recipe=None))  # len() plans the epoch
except MemoryError:
    print("MEMORY-ERROR")
except Exception as e:
    print("REFUSED", type(e).__name__, e)
else:
    print("ACCEPTED")
"""


@pytest.mark.parametrize("present", [True, False], ids=["small-shards", "no-shards"])
def test_counts_a_manifest_claims_are_bounded_by_the_data_under_a_memory_limit(
    tmp_path: Path, present: bool
) -> None:
    """100 shards claiming 10,000,000 samples each (sizes that would fit, 10 GB each) made the planner allocate
    7.45 GiB before reading any shard; the claims must fit the shards' real bytes before any plan is sized."""
    real = tmp_path / "real"
    write_shards(real, [4])
    out = tmp_path / "hostile"
    out.mkdir()
    shardlist = []
    for i in range(100):
        name = f"shard-{i:06d}.tar"
        if present:
            shutil.copy(real / "shard-000000.tar", out / name)
        shardlist.append({"url": name, "nsamples": 10_000_000, "filesize": 10_240_000_000})
    (out / "index.json").write_text(json.dumps({"__kind__": "wids-shard-index-v1", "shardlist": shardlist}))
    env = {**os.environ, "MALLOC_ARENA_MAX": "2"}
    r = subprocess.run(
        [sys.executable, "-c", BOUNDED, str(out / "index.json")],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    line = r.stdout.strip()
    assert line.startswith("REFUSED"), (line, r.stderr[-2000:])
    if present:
        assert "ManifestError" in line and "claims 10,000,000 samples, but the shard has" in line, line
    else:
        assert "StorageNotFoundError" in line and "not found:" in line, line


def test_a_sample_takes_at_least_two_tar_blocks() -> None:
    from pass_wds.format.manifest import validate_index

    ok = {"__kind__": "wids-shard-index-v1", "shardlist": [{"url": "a.tar", "nsamples": 4, "filesize": 4096}]}
    validate_index(ok, "index.json")
    ok["shardlist"][0]["nsamples"] = 5  # 5 samples cannot fit in 4096 bytes: two 512-byte blocks each
    with pytest.raises(ManifestError, match=r"shardlist\[0\]\.nsamples \(5\) cannot fit in filesize 4,096"):
        validate_index(ok, "index.json")


def test_upload_never_copies_files_outside_the_output(dataset: Path, private: Path, tmp_path: Path) -> None:
    edit(dataset, set_entry("idx", "../private.txt"))
    dest = tmp_path / "dest"
    one_line_error(cli("upload", dataset, dest), "shardlist[0].idx")
    assert not any(p.name == "private.txt" for p in tmp_path.rglob("*") if p != private)
