#!/usr/bin/env python
"""Check the tested torch/torchvision range end to end, one throwaway virtual environment per pair.

For each pair (by default both ends of ``pass_wds.compat.TESTED``) this

1. installs the pair, then pass-wds on top with a plain ``pip install -e .`` (no constraints), and checks
   that pip kept the pair: neither torch nor torchvision was upgraded or replaced;
2. uses it: ``make-shards`` of the bundled sample, one SimCLR epoch of the loader (device stage on the CPU)
   and ``pass-wds preview --recipe simclr``;
3. installs a torchvision of another release over it (``--no-deps``) and checks that importing the loader
   fails in one line naming both versions and the fix, and that ``pass-wds preview`` exits 2 with that line.

    python scripts/check_torch_range.py                        # both ends of the tested range
    python scripts/check_torch_range.py --pair 2.13.0:0.28.0   # one pair
    python scripts/check_torch_range.py --pip-args "--index-url https://download.pytorch.org/whl/cpu"

The environments see this interpreter's packages (``--system-site-packages``), so a pair that is already
installed here, and numpy, pyarrow or CUDA libraries, are not downloaded again; ``--isolated`` makes fully
fresh ones (what a CI runner without a torch does). Each environment is deleted afterwards (``--keep``
keeps it). Exit status 0 when every pair passes; the last lines say which failed and why.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from pass_wds.compat import TESTED, matching_torchvision  # noqa: E402

USE = """
import sys
from pass_wds import make_loader  # first, as a user's script would: a bad pair is refused here
import torch, torchvision
loader = make_loader(sys.argv[1], batch_size=8, recipe="simclr", num_workers=1, device="cpu", seed=0)
seen = sum(len(b["__key__"]) for b in loader)
assert seen == 32, seen  # 36 samples, 4 batches of 8 (4 left over)
print(f"loader ok: {seen} samples with torch {torch.__version__}, torchvision {torchvision.__version__}")
"""
VERSIONS = (
    "import json, importlib.metadata as m; print(json.dumps([m.version('torch'), m.version('torchvision')]))"
)


def run(cmd: list[str], **kw: object) -> subprocess.CompletedProcess[str]:
    print("$", shlex.join(cmd), flush=True)
    return subprocess.run(cmd, capture_output=True, text=True, **kw)  # type: ignore[call-overload, no-any-return]


def check_pair(torch_v: str, tv_v: str, args: argparse.Namespace) -> str | None:
    """None when the pair passes, else what failed (one line)."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    where = Path(tempfile.mkdtemp(prefix=f"pass-wds-torch-{torch_v}-"))
    venv = where / "venv"
    py = str(venv / "bin" / "python")
    pip = [py, "-m", "pip", "install", "-q", *shlex.split(args.pip_args)]
    try:
        flags = [] if args.isolated else ["--system-site-packages"]
        r = run([sys.executable, "-m", "venv", *flags, str(venv)])
        if r.returncode:
            return f"venv: {r.stderr.strip()}"
        r = run([*pip, f"torch=={torch_v}", f"torchvision=={tv_v}"], env=env)
        if r.returncode:
            return f"installing the pair failed: {r.stderr.strip().splitlines()[-1:]}"
        before = json.loads(run([py, "-c", VERSIONS], env=env).stdout)
        r = run([*pip, "-e", str(REPO)], env=env, cwd=where)
        if r.returncode:
            return f"pip install -e . failed: {r.stderr.strip().splitlines()[-1:]}"
        after = json.loads(run([py, "-c", VERSIONS], env=env).stdout)
        if after != before:
            return f"pip install -e . replaced the pair: {before} -> {after}"
        print(f"kept torch {after[0]}, torchvision {after[1]}")

        out, png = where / "out", where / "preview.png"
        cli = [py, "-m", "pass_wds.cli"]
        r = run([*cli, "make-shards", "--config", "configs/sample.yaml", "--output", str(out), "--no-progress"],
                env=env, cwd=REPO)  # fmt: skip
        if r.returncode or "wrote 36 samples" not in r.stdout:
            return f"make-shards: {r.stdout}{r.stderr}"
        r = run([py, "-c", USE, str(out)], env=env, cwd=where)
        if r.returncode:
            return f"loader: {r.stderr.strip()[-2000:]}"
        print(r.stdout.strip())
        r = run(
            [*cli, "preview", str(out), "--out", str(png), "--recipe", "simclr", "-n", "4"],
            env=env,
            cwd=where,
        )
        if r.returncode or not png.is_file():
            return f"preview: {r.stderr.strip()[-2000:]}"

        # another torchvision release over the pair: one line naming both versions and the fix
        minor = int(tv_v.split(".")[1])
        other = args.mismatch or f"0.{minor - 1 if minor > 16 else minor + 1}.0"
        r = run([*pip, "--no-deps", f"torchvision=={other}"], env=env)
        if r.returncode:
            return f"installing torchvision {other} failed: {r.stderr.strip().splitlines()[-1:]}"
        r = run([py, "-c", "import pass_wds.loading"], env=env, cwd=where)
        last = r.stderr.strip().splitlines()[-1] if r.stderr.strip() else ""
        want = f"torch {after[0]} and torchvision {other} do not match"
        if r.returncode == 0 or not last.startswith("pass_wds.compat.TorchMismatchError: " + want):
            return f"a mismatched torchvision {other} was not refused in one line: {last or r.stdout}"
        if f"torchvision {matching_torchvision(after[0])}" not in last or "pip install" not in last:
            return f"the refusal does not name the fix: {last}"
        r = run([*cli, "preview", str(out), "--out", str(png), "-n", "4"], env=env, cwd=where)
        lines = r.stderr.strip().splitlines()
        if r.returncode != 2 or len(lines) != 1 or want not in lines[0]:
            return f"pass-wds preview with the mismatched pair: exit {r.returncode}: {r.stderr.strip()}"
        print(f"mismatch refused: {lines[0]}")
        return None
    finally:
        if args.keep:
            print(f"kept {where}")
        else:
            shutil.rmtree(where, ignore_errors=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--pair",
        action="append",
        metavar="TORCH:TORCHVISION",
        help="a pair to check (repeatable); default: the oldest and newest tested ones, "
        + ", ".join(f"{t}:{v}" for t, v in TESTED),
    )
    ap.add_argument(
        "--mismatch", metavar="VERSION", help="the other torchvision to install (default: one release off)"
    )
    ap.add_argument("--pip-args", default="", help="extra pip options, e.g. an --index-url for CPU wheels")
    ap.add_argument(
        "--isolated", action="store_true", help="environments without this interpreter's packages"
    )
    ap.add_argument("--keep", action="store_true", help="keep the environments (their paths are printed)")
    args = ap.parse_args()
    pairs = [tuple(p.split(":", 1)) for p in args.pair] if args.pair else list(TESTED)
    failed = []
    for torch_v, tv_v in pairs:
        print(f"=== torch {torch_v}, torchvision {tv_v}", flush=True)
        problem = check_pair(torch_v, tv_v, args)
        print(
            f"--- torch {torch_v}, torchvision {tv_v}: {'ok' if problem is None else 'FAILED: ' + problem}",
            flush=True,
        )
        if problem:
            failed.append(f"torch {torch_v}/torchvision {tv_v}: {problem}")
    print("all pairs ok" if not failed else "\n".join(failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
