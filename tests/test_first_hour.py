"""The small things a first hour runs into (issue 20 item 7, outside make-shards): each one line that says
what happened and what to do, a typo answered with the closest option, options that do what they say."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import FakeOutputs
from servers import Bucket, FaultProxy

from pass_wds import dataset, hosting, make_loader, verify
from pass_wds.config import ConfigError

REPO = Path(__file__).resolve().parents[1]
PASS_WDS = [sys.executable, "-m", "pass_wds.cli"]


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The bundled sample converted as `make demo` does: 36 samples, one corrupt and one unlisted image."""
    out = tmp_path_factory.mktemp("first-hour") / "demo"
    subprocess.run(
        [*PASS_WDS, "make-shards", "--config", "configs/sample.yaml", "--output", str(out), "--no-progress"],
        check=True,
        capture_output=True,
        cwd=REPO,
        timeout=240,
    )
    return out


def _inspect(out: Path, query: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*PASS_WDS, "inspect", str(out), "--sample", query], capture_output=True, text=True)


def _errors(out: Path) -> list[dict[str, str]]:
    return [json.loads(line) for line in (out / "errors.jsonl").read_text().splitlines()]


def test_inspect_sample_of_a_rejected_image_says_why(demo: Path) -> None:
    corrupt = next(e for e in _errors(demo) if e["reason"] == "corrupt")
    for query in (corrupt["key"], Path(corrupt["member"]).name, corrupt["member"], corrupt["key"][:10]):
        r = _inspect(demo, query)
        assert r.returncode == 1 and r.stdout == ""
        line = r.stderr.strip()
        assert "\n" not in line and line.endswith("(errors.jsonl)"), line
        assert f"{corrupt['member']} is not in the dataset: rejected: corrupt (" in line, line
    unlisted = next(e for e in _errors(demo) if e["reason"] == "missing-metadata")
    assert (
        "rejected: missing-metadata (no metadata row) (errors.jsonl)"
        in _inspect(demo, unlisted["key"]).stderr
    )


def test_inspect_sample_takes_a_unique_key_prefix(demo: Path) -> None:
    keys = sorted(
        ln.split()[3].split(".")[0] for p in demo.glob("*.idx") for ln in p.read_text().splitlines()[1:]
    )
    keys += [e["key"] for e in _errors(demo)]
    key = keys[0]
    prefix = next(key[:n] for n in range(1, len(key)) if sum(k.startswith(key[:n]) for k in keys) == 1)
    r = _inspect(demo, prefix)
    assert r.returncode == 0 and json.loads(r.stdout)["_provenance"]["key"] == key, r.stderr
    ambiguous = next(c for c in "0123456789abcdef" if sum(k.startswith(c) for k in keys) > 1)
    r = _inspect(demo, ambiguous)
    n = sum(k.startswith(ambiguous) for k in keys)
    assert r.returncode == 1 and r.stderr.startswith(f"{n} samples start with '{ambiguous}' ("), r.stderr
    assert r.stderr.strip().endswith("give more of the key")
    r = _inspect(demo, "zz")
    assert r.returncode == 1 and r.stderr.strip() == "no sample with key, key prefix or file name 'zz'"
    assert verify.find_sample(str(demo), prefix) is not None  # the library finds the same


def test_a_shards_idx_as_source_names_the_shard_and_the_folder(demo: Path) -> None:
    idx = demo / "pass-000000.idx"
    with pytest.raises(dataset.SourceError) as e:
        make_loader(str(idx), batch_size=2, num_workers=0)
    msg = str(e.value)
    assert "is the .idx index of a shard, not a dataset" in msg and "empty" not in msg
    assert str(demo / "pass-000000.tar") in msg and f"the output folder ({demo})" in msg
    r = subprocess.run([*PASS_WDS, "verify", str(demo / "errors.jsonl")], capture_output=True, text=True)
    assert r.returncode == 2 and "is a file but neither a shard" in r.stderr and r.stderr.count("\n") == 1


def test_bare_pass_wds_lists_its_commands() -> None:
    r = subprocess.run(PASS_WDS, capture_output=True, text=True)
    assert r.returncode == 2
    for command in ("fetch", "make-shards", "verify", "inspect", "upload", "urls", "preview", "bench"):
        assert f"    {command}" in r.stdout, r.stdout


@pytest.mark.parametrize(
    ("argv", "hint"),
    [
        (
            ["make-shards", "sample/PASS.0.tar", "--metdata", "m.csv", "--output", "o"],
            "did you mean --metadata?",
        ),
        (["make-shards", "sample/PASS.0.tar", "-o", "o", "--shard-sise=1MB"], "did you mean --shard-size?"),
        (["inspct", "out"], "did you mean inspect?"),
        (["verify", "out", "--storage-optoins", "{}"], "did you mean --storage-options?"),
    ],
)
def test_a_typo_gets_the_closest_option(argv: list[str], hint: str, tmp_path: Path) -> None:
    commands = [[*PASS_WDS, *argv]]
    if argv[0] == "make-shards":  # the make-shards entry point says the same
        entry = "import sys; from pass_wds.cli import make_shards_main; sys.exit(make_shards_main())"
        commands.append([sys.executable, "-c", entry, *argv[1:]])
    for cmd in commands:
        r = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path)
        assert r.returncode == 2 and hint in r.stderr and r.stderr.count("\n") == 1, r.stderr
    assert not (tmp_path / "o").exists()


def test_a_misspelt_recipe_gets_the_closest_name(demo: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"unknown recipe 'simclrr'.* \(did you mean simclr\?\)$"):
        make_loader(str(demo), batch_size=2, recipe="simclrr", num_workers=0)
    r = subprocess.run([*PASS_WDS, "preview", str(demo), "--out", str(tmp_path / "p.png"), "--recipe", "dinno"],
                       capture_output=True, text=True)  # fmt: skip
    assert r.returncode == 2 and "(did you mean dino?)" in r.stderr and r.stderr.count("\n") == 1


@pytest.fixture(scope="module")
def local_out(fake_outputs: FakeOutputs) -> Path:
    return fake_outputs.small_output("250KB")


def test_upload_verify_reads_every_shard_back(local_out: Path, s3: Bucket, fault_proxy: object) -> None:
    proxy: FaultProxy = fault_proxy(s3.server.endpoint)  # type: ignore[operator]
    so = {**s3.storage_options, "client_kwargs": {"endpoint_url": proxy.url}}
    shards = sorted(p.name for p in local_out.glob("*.tar"))
    plain = hosting.upload(str(local_out), f"{s3.url}/plain", storage_options=so)
    assert plain.verified == 0
    proxy.requests.clear()
    report = hosting.upload(str(local_out), f"{s3.url}/checked", storage_options=so, verify=True)
    assert report.verified == len(shards)
    after = [p.split("?")[0] for m, p, _ in proxy.requests if m == "GET"]
    assert {s for s in shards if any(p.endswith(f"/checked/{s}") for p in after)} == set(shards)
    r = subprocess.run(
        [*PASS_WDS, "upload", str(local_out), f"{s3.url}/cli", "--verify", "--progress", "--storage-options",
         json.dumps(so)],
        capture_output=True, text=True,
    )  # fmt: skip
    assert r.returncode == 0 and f"verified all {len(shards)} shards there" in r.stdout, r.stderr
    assert "upload" in r.stderr  # --progress shows the bar even when stderr is not a terminal


def test_upload_verify_fails_on_what_a_copy_cannot_see(local_out: Path, s3: Bucket, tmp_path: Path) -> None:
    """An output whose .idx (which has no checksum in index.json) disagrees with its shard: a plain upload
    copies it faithfully; --verify reads it back, finds it and fails naming the shard."""
    bad = tmp_path / "bad"
    shutil.copytree(local_out, bad)
    idx = sorted(bad.glob("*.idx"))[0]
    lines = idx.read_text().splitlines()
    fields = lines[1].split()
    fields[1] = str(int(fields[1]) + 512)  # the first sample's image offset, one header off
    idx.write_text("\n".join([lines[0], " ".join(fields), *lines[2:]]) + "\n")
    so = s3.storage_options
    hosting.upload(str(bad), f"{s3.url}/unchecked", storage_options=so)
    with pytest.raises(
        hosting.storage.StorageError, match=rf"1 of \d+ uploaded shards failed verification.*{idx.stem}"
    ):
        hosting.upload(str(bad), f"{s3.url}/checked-bad", storage_options=so, verify=True)
