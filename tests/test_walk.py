"""The first-contact walk: the README's own commands (between ``<!-- walk:begin -->`` and ``<!-- walk:end -->``),
run in order against a local HTTP server that serves a PASS-shaped fake under the published layout: fetch,
convert, verify, preview, train two steps under torchrun (1 node × 2 processes, gloo), stop, resume.

Only the paths change (``/data/…`` → a temporary folder) and a few flags are appended for the tiny data (the
mirror URL, a small shard size, batch size 4); argparse lets the last occurrence of an option win."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image
from servers import HttpServer, free_port

from pass_wds import fakedata as fd

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def readme_walk() -> list[list[str]]:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    block = re.search(r"<!-- walk:begin -->\s*```bash\n(.*?)```\s*<!-- walk:end -->", text, re.S)
    assert block, "README has no walk block"
    joined = block.group(1).replace("\\\n", " ")
    return [shlex.split(line, comments=True) for line in joined.splitlines() if line.strip()]


def test_readme_walk_fetch_convert_verify_preview_train_stop_resume(tmp_path: Path) -> None:
    published = tmp_path / "www" / "record" / "6615455" / "files"
    fd.make_fake_pass(fd.FakePassConfig(out=str(published), n_images=120, parts=10, bad=True))
    server = HttpServer(tmp_path / "www").start()
    data = tmp_path / "data"
    paths = {"/data/pass-wds": data / "pass-wds", "/data/pass-preview.png": data / "pass-preview.png"}
    paths |= {"/data/ssl-run": data / "ssl-run", "/data/pass": data / "pass"}
    extra = {
        "fetch": ["--base-url", f"{server.url}/record/6615455/files/", "--no-progress"],
        "make-shards": ["--shard-size", "300KB", "--workers", "2", "--no-progress"],
        "preview": ["-n", "4"],
        "train_ssl": ["--batch-size", "4", "--num-workers", "0", "--log-every", "1"],
    }
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    transcript: list[str] = []
    outputs: list[subprocess.CompletedProcess[str]] = []
    try:
        for words in readme_walk():
            words = [_subst(w, paths) for w in words]
            tool = words[0]
            if tool == "pass-wds":
                cmd = [sys.executable, "-m", "pass_wds.cli", *words[1:], *extra.get(words[1], [])]
            elif tool == "make-shards":
                cmd = [sys.executable, "-m", "pass_wds.cli", *words, *extra["make-shards"]]
            elif tool == "torchrun":
                port = ["--master_port", str(free_port())]  # tests run side by side: no fixed 29500
                cmd = [sys.executable, "-m", "torch.distributed.run", *port, *words[1:], *extra["train_ssl"]]
            else:
                raise AssertionError(f"unexpected command in the README walk: {words}")
            r = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, env=env, timeout=600)
            transcript.append(f"$ {shlex.join(words)}\n{r.stdout}{r.stderr}")
            assert r.returncode == 0, transcript[-1][-4000:]
            outputs.append(r)
    finally:
        server.stop()
        (tmp_path / "walk.log").write_text("\n".join(transcript))
        print("\n".join(transcript)[-6000:])
    fetch, convert, verify, preview, train, resume = outputs
    assert "fetched 11 files" in fetch.stdout
    assert re.search(r"wrote \d+ samples in \d+ shards", convert.stdout) and "rejected" in convert.stdout
    assert (data / "pass-wds" / "croissant.json").exists()
    assert re.search(r"all \d+ shards ok", verify.stdout)
    png = Image.open(data / "pass-preview.png")
    assert png.size[0] > 400 and "4 samples, 2 views each" in preview.stdout
    assert "done: 2 steps" in train.stderr, train.stderr[-3000:]
    assert "resumed from" in resume.stderr and "at step 2" in resume.stderr, resume.stderr[-3000:]
    assert "done: 4 steps" in resume.stderr


def _subst(word: str, paths: dict[str, Path]) -> str:
    """One pass, longest name first, so a replaced path is never replaced again."""
    pattern = "|".join(re.escape(k) for k in sorted(paths, key=len, reverse=True))
    return re.sub(pattern, lambda m: str(paths[m.group(0)]), word)
