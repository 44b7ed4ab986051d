"""Shared helpers of the benchmarks: data preparation, the machine description, measured subprocesses,
result files and tables. Not a public API."""

from __future__ import annotations

import contextlib
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "benchmarks" / "results"
DATA = REPO / "bench-data"
CORPUS = Path(os.environ.get("PASS_WDS_CORPUS", str(REPO.parent / "shared" / "corpus")))
FULL_IMAGES = 20_000
QUICK_IMAGES = 2_000


def machine() -> dict[str, Any]:
    """CPU model, cores, memory and the disk that holds bench-data (absolute figures name the machine)."""
    info: dict[str, Any] = {"platform": platform.platform(), "python": platform.python_version()}
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        for line in out.splitlines():
            k, _, v = line.partition(":")
            if k.strip() == "Model name":
                info["cpu"] = v.strip()
    except (OSError, subprocess.CalledProcessError):
        info["cpu"] = platform.processor() or "unknown"
    info["cores"] = os.cpu_count()
    with contextlib.suppress(ValueError, OSError):
        info["memory_gb"] = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    DATA.mkdir(parents=True, exist_ok=True)
    try:
        df = subprocess.run(
            ["df", "-hT", str(DATA)], capture_output=True, text=True, check=True
        ).stdout.splitlines()[-1]
        dev, fstype, size = df.split()[:3]
        info["disk"] = f"{dev} ({fstype}, {size})"
    except (OSError, subprocess.CalledProcessError, ValueError):
        info["disk"] = "unknown"
    try:
        import torch

        info["torch"] = torch.__version__
        info["gpu"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    except ImportError:
        pass
    return info


def machine_line(m: dict[str, Any]) -> str:
    return (
        f"{m.get('cpu', '?')}, {m.get('cores')} cores, {m.get('memory_gb', '?')} GB RAM, disk {m.get('disk')}"
    )


def raw_dataset(images: int, photos: bool = False, parts: int | None = None) -> Path:
    """A PASS-shaped raw set (PASS.<i>.tar + pass_metadata.csv) under bench-data/, generated once.

    Synthetic photo-like JPEGs by default; ``photos`` derives them from the corpus photos instead (real
    photographic content, resized into PASS's size range)."""
    name = f"{'photos' if photos else 'raw'}-{images}"
    out = DATA / name
    if (out / "pass_metadata.csv").is_file() and not list(out.glob("*.partial")):
        return out
    parts = parts or (10 if images >= 10_000 else 2)
    cmd = [sys.executable, str(REPO / "scripts" / "make_fake_pass.py"), "--out", str(out)]
    cmd += ["--images", str(images), "--parts", str(parts), "--workers", str(min(2, os.cpu_count() or 1))]
    if photos:
        cmd += ["--photos", str(CORPUS / "photos")]
    print(f"generating {name} ({images} images) ...", flush=True)
    subprocess.run(cmd, check=True)
    return out


def raw_bytes(raw: Path) -> int:
    return sum(p.stat().st_size for p in raw.glob("PASS.*.tar"))


def drop_caches() -> bool:
    """Drop the page cache (needs root and a writable /proc/sys); False when not allowed."""
    try:
        subprocess.run(["sync"], check=True)
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
        return True
    except OSError:
        return False


@dataclass
class Measured:
    wall_s: float
    peak_rss_mb: float  # the whole process tree, summed, at its peak
    peak_proc_rss_mb: float  # the largest single process
    cpu_s: float  # user + system of the tree
    returncode: int
    output: str


def run_measured(cmd: Sequence[str], *, env: dict[str, str] | None = None, poll_s: float = 0.05) -> Measured:
    """Run ``cmd``, polling the RSS of its whole process tree (psutil), until it exits."""
    import psutil

    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        list(cmd), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=str(REPO)
    )
    out_chunks: list[str] = []
    reader = threading.Thread(target=lambda: out_chunks.append(proc.stdout.read()))  # type: ignore[union-attr]
    reader.start()
    peak_tree = peak_proc = 0.0
    root = psutil.Process(proc.pid)
    while proc.poll() is None:
        try:
            procs = [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            break
        tree = 0.0
        for p in procs:
            try:
                rss = p.memory_info().rss / 2**20
            except psutil.Error:
                continue
            tree += rss
            peak_proc = max(peak_proc, rss)
        peak_tree = max(peak_tree, tree)
        time.sleep(poll_s)
    proc.wait()
    wall = time.perf_counter() - t0
    reader.join()
    # CPU of the command and every descendant it waited for (summing per-process times while polling
    # counted reaped children twice: a parent's cpu_times include its children's)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return Measured(wall, peak_tree, peak_proc, cpu, proc.returncode, "".join(out_chunks))


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values)) if values else float("nan")


def rmtree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


def write_result(name: str, record: dict[str, Any]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    record = {"benchmark": name, "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **record}
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {path.relative_to(REPO)}")
    return path


def table(rows: Sequence[dict[str, Any]], columns: Sequence[tuple[str, str, str]]) -> str:
    """Markdown table; ``columns`` = (key, header, format spec)."""
    head = "| " + " | ".join(h for _, h, _ in columns) + " |"
    sep = "|" + "|".join("---" if i == 0 else "---:" for i in range(len(columns))) + "|"
    lines = [head, sep]
    for r in rows:
        cells = []
        for key, _, fmt in columns:
            v = r.get(key)
            cells.append("–" if v is None else format(v, fmt) if fmt else str(v))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


# -------------------------------------------------------------------------------------- local S3 (moto)

MOTO_CREDS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def serve(cmd: Sequence[str], url: str, env: dict[str, str] | None = None, timeout: float = 30.0) -> Any:
    """Start a server process and return it once ``url`` answers HTTP (any status); kill it and raise if it
    exits or stays silent for ``timeout`` seconds."""
    import urllib.error
    import urllib.request

    proc = subprocess.Popen(list(cmd), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=0.5):
                return proc
        except urllib.error.HTTPError:
            return proc
        except OSError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            proc.wait()
            raise RuntimeError(f"{cmd[0]} … did not start serving {url} within {timeout}s")
        time.sleep(0.05)


class LocalS3:
    """moto's S3 server (``python -m moto.server``) as a child process on a free loopback port, for benchmarks
    that compare S3 with local disk in the same run. ``close()`` kills it; moto keeps everything in memory."""

    def __init__(self) -> None:
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        cmd = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)]
        self.proc = serve(cmd, self.endpoint, env={**os.environ, **MOTO_CREDS})

    @property
    def storage_options(self) -> dict[str, Any]:
        return {
            "key": MOTO_CREDS["AWS_ACCESS_KEY_ID"],
            "secret": MOTO_CREDS["AWS_SECRET_ACCESS_KEY"],
            "client_kwargs": {"endpoint_url": self.endpoint, "region_name": "us-east-1"},
        }

    def make_bucket(self, name: str) -> None:
        import boto3

        boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=MOTO_CREDS["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=MOTO_CREDS["AWS_SECRET_ACCESS_KEY"],
            region_name="us-east-1",
        ).create_bucket(Bucket=name)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=10)


def load_script(name: str) -> Any:
    """``scripts/<name>.py`` as a module (the benchmarks time the training script's own model and loss; a
    script is not a package, so it is loaded from its file, without changing ``sys.path``)."""
    import importlib.util

    path = REPO / "scripts" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"pass_wds_script_{name}", path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
