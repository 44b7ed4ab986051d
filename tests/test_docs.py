"""The code blocks of README.md and docs/*.md are run, so a documented call cannot go stale.

* ```python blocks are executed against the bundled sample's output (``configs/sample.yaml``), served from a
  real moto S3 server where the block reads ``s3://``. The only liberties taken are in ``REWRITES``: the
  documented placeholders become the real dataset, and sizes become ones the 36-image sample fits.
* ```bash / ```sh blocks: every ``make-shards`` and ``pass-wds`` command is parsed by the real argparse
  parser; ``verify``, ``inspect`` and ``urls`` of a local output, and ``make-shards --config configs/sample.yaml``,
  also run. ``make`` targets must exist in the Makefile, and scripts must exist and accept the options used.
* ```yaml blocks must parse; a recipe (a mapping with ``views``) must load with ``load_recipe``.

A block that needs what a test cannot have (real PASS, a cluster, your own ``train.py``) is preceded by
``<!-- no-test: reason -->``, which the test honours (and reports as a skip with that reason).
"""

from __future__ import annotations

import functools
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml
from conftest import find_image
from servers import MotoServer

from pass_wds.cli import build_parser
from pass_wds.cli import main as pass_wds_main
from pass_wds.cli.common import Parser
from pass_wds.cli.convert import add_make_shards_arguments

REPO = Path(__file__).resolve().parent.parent
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
FENCE = re.compile(r"^```(\S*)\s*$")
NO_TEST = re.compile(r"^<!--\s*no-test:\s*(.+?)\s*-->$")
SHELL = {"bash", "sh", "shell", "console"}
# The output folder of the documented examples (the demo's, a real PASS conversion's, a local copy's).
DEMO_OUTPUTS = {"/tmp/pass-wds-demo", "/data/pass-wds", "./out", "out/"}
PLACEHOLDER = re.compile(r"\.\.\.|…")


@dataclass(frozen=True)
class Block:
    path: Path
    line: int
    lang: str
    text: str
    no_test: str | None

    @property
    def id(self) -> str:
        return f"{self.path.relative_to(REPO)}:{self.line}"


def doc_blocks() -> list[Block]:
    out = []
    for path in DOCS:
        lines = path.read_text(encoding="utf-8").splitlines()
        i = 0
        while i < len(lines):
            m = FENCE.match(lines[i])
            if not m:
                i += 1
                continue
            start = i
            end = next(j for j in range(i + 1, len(lines)) if lines[j].startswith("```"))
            before = next((lines[j].strip() for j in range(start - 1, -1, -1) if lines[j].strip()), "")
            reason = NO_TEST.match(before)
            text = "\n".join(lines[start + 1 : end]) + "\n"
            out.append(Block(path, start + 1, m.group(1), text, reason.group(1) if reason else None))
            i = end + 1
    return out


BLOCKS = doc_blocks()


def _params(langs: set[str]) -> list[Any]:
    marks = lambda b: [pytest.mark.skip(reason=f"no-test: {b.no_test}")] if b.no_test else []  # noqa: E731
    return [pytest.param(b, id=b.id, marks=marks(b)) for b in BLOCKS if b.lang in langs]


def test_blocks_are_found_and_tagged() -> None:
    """Every block that holds commands or code says its language, so none escapes the tests below."""
    assert len([b for b in BLOCKS if b.lang == "python"]) >= 6
    assert len([b for b in BLOCKS if b.lang in SHELL]) >= 10
    for b in BLOCKS:
        if not b.lang:
            first = b.text.strip().split()[0] if b.text.strip() else ""
            assert first not in ("make", "make-shards", "pass-wds", "python", "torchrun"), (
                f"{b.id}: a command block without a language tag (```bash)"
            )


# ------------------------------------------------------------------------------------------ shell blocks


def shell_commands(text: str) -> list[list[str]]:
    """Commands of a shell block: continuations joined, comments dropped; with ``$`` prompts, only those."""
    joined = re.sub(r"\\\n\s*", " ", text)
    lines = [ln.strip() for ln in joined.splitlines()]
    if any(ln.startswith("$ ") for ln in lines):
        lines = [ln[2:] for ln in lines if ln.startswith("$ ")]
    commands = []
    for ln in lines:
        words = shlex.split(ln, comments=True)
        while words:
            cut = words.index("&&") if "&&" in words else len(words)
            commands.append(words[:cut])
            words = words[cut + 1 :]
    return [c for c in commands if c]


def _parse(parser: Any, args: list[str], capsys: pytest.CaptureFixture[str], what: str) -> None:
    try:
        parser.parse_args(args)
    except SystemExit as e:
        if e.code:  # --help/--version exit 0
            pytest.fail(f"{what}: the documented arguments do not parse: {capsys.readouterr().err.strip()}")


def _make_shards_parser() -> Parser:
    parser = Parser(prog="make-shards")
    parser.add_argument("-v", "--verbose", action="store_true")
    add_make_shards_arguments(parser)
    return parser


@functools.cache
def _script_help(script: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(REPO / script), "--help"], capture_output=True, text=True, cwd=REPO, timeout=120
    )


def _check_script(script: str, args: list[str], what: str) -> None:
    assert (REPO / script).is_file(), f"{what}: {script} does not exist"
    shown = _script_help(script)
    assert shown.returncode == 0, f"{what}: {script} --help failed: {shown.stderr}"
    for opt in (a.split("=", 1)[0] for a in args if a.startswith("--")):
        assert opt in shown.stdout, f"{what}: {script} has no option {opt}"


def _makefile_targets() -> set[str]:
    text = (REPO / "Makefile").read_text()
    return set(re.findall(r"^([A-Za-z][\w-]*):", text, flags=re.M))


@pytest.mark.parametrize("block", _params(SHELL))
def test_shell_block(
    block: Block, sample_out: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    checked = 0
    for argv in shell_commands(block.text):
        what = f"{block.id}: {shlex.join(argv)}"
        prog, args = argv[0], argv[1:]
        if prog == "make":
            missing = {a for a in args if not a.startswith("-") and "=" not in a} - _makefile_targets()
            assert not missing, f"{what}: no such Makefile target {missing}"
        elif prog == "make-shards":
            _parse(_make_shards_parser(), args, capsys, what)
            if args[:2] == ["--config", "configs/sample.yaml"]:
                out = tmp_path / "demo"
                run = [a if a not in DEMO_OUTPUTS else str(out) for a in args]
                r = subprocess.run(
                    [sys.executable, "-m", "pass_wds.cli", "make-shards", *run],
                    capture_output=True,
                    text=True,
                    cwd=REPO,
                    timeout=240,
                )
                assert r.returncode == 0 and (out / "index.json").is_file(), f"{what}: {r.stderr}"
        elif prog == "pass-wds":
            _parse(build_parser(), args, capsys, what)
            local = [a for a in args[1:] if a in DEMO_OUTPUTS]
            if args[0] in ("verify", "inspect", "urls") and local and not PLACEHOLDER.search(" ".join(args)):
                code = pass_wds_main([a if a not in DEMO_OUTPUTS else str(sample_out) for a in args])
                assert code == 0, f"{what}: exit {code}\n{capsys.readouterr()}"
        elif prog in ("python", "python3") and args and args[0] == "-m":
            module = args[1]
            assert (
                subprocess.run([sys.executable, "-c", f"import {module}"], capture_output=True).returncode
                == 0
            ), what
        elif prog in ("python", "python3"):
            _check_script(args[0], args[1:], what)
        elif prog == "torchrun":
            script = next(i for i, a in enumerate(args) if a.endswith(".py"))
            _check_script(args[script], args[script + 1 :], what)
        else:
            continue  # export, rsync, …: not ours to check
        checked += 1
    assert checked, (
        f"{block.id}: no command of this project in the block; tag it otherwise or mark it no-test"
    )


# ----------------------------------------------------------------------------------------- python blocks


class _Model(torch.nn.Module):
    """Stands in for the reader's model: two batches of views in, a loss out."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = torch.nn.Parameter(torch.ones(1))

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return ((a.float() - b.float()) * self.scale).abs().mean()


@pytest.fixture(scope="module")
def sample_out(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The bundled sample converted as ``make demo`` does (36 images in 5 shards)."""
    out = tmp_path_factory.mktemp("docs") / "pass-wds-demo"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pass_wds.cli",
            "make-shards",
            "--config",
            "configs/sample.yaml",
            "--output",
            out,
        ],
        check=True,
        capture_output=True,
        cwd=REPO,
        timeout=240,
    )
    return out


def _upload(server: MotoServer, bucket: str, prefix: str, folder: Path) -> str:
    client = server.client()
    if bucket not in [b["Name"] for b in client.list_buckets()["Buckets"]]:
        client.create_bucket(Bucket=bucket)
    for f in folder.iterdir():
        client.put_object(Bucket=bucket, Key=f"{prefix}/{f.name}", Body=f.read_bytes())
    return f"s3://{bucket}/{prefix}/index.json"


def _rewrites(block: Block, sample_out: Path, tmp_path: Path, request: pytest.FixtureRequest) -> list[Any]:
    index = str(sample_out / "index.json")
    rules: list[Any] = [
        (re.compile(r"batch_size\s*=\s*\d+"), "batch_size = 4"),  # the sample has 36 images
        (re.compile(r"num_workers=\d+"), "num_workers=0"),  # in-process: no worker start-up per block
        (re.compile(r"\"cuda\""), '"cpu"'),
        (
            re.compile(r"\"(/data/pass-wds/index.json|shards/index.json|/tmp/pass-wds-demo/index.json)\""),
            f'"{index}"',
        ),
        (re.compile(r"/local/nvme/pass-cache"), str(tmp_path / "cache")),
    ]
    if "s3://" in block.text:
        server: MotoServer = request.getfixturevalue("moto_server")
        request.getfixturevalue("aws_env")
        request.getfixturevalue("monkeypatch").setenv("AWS_ENDPOINT_URL", server.endpoint)
        for url in sorted(set(re.findall(r"s3://[\w.-]+/[\w/.-]+/index\.json", block.text))):
            bucket, prefix = url[5:].split("/", 1)
            real = _upload(server, bucket, prefix.rsplit("/", 1)[0], sample_out)
            rules.append((re.compile(re.escape(url)), real))
        rules.append((re.compile(r"http://127\.0\.0\.1:9000"), server.endpoint))
    return rules


@pytest.mark.parametrize("block", _params({"python"}))
def test_python_block(
    block: Block,
    sample_out: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    request: pytest.FixtureRequest,
) -> None:
    code = block.text
    for pattern, replacement in _rewrites(block, sample_out, tmp_path, request):
        code = pattern.sub(replacement, code)
    from pass_wds import make_loader

    index = str(sample_out / "index.json")
    model = _Model()
    namespace: dict[str, Any] = {
        "__name__": "__doc_block__",
        "torch": torch,
        "np": np,
        "start_epoch": 0,
        "epochs": 1,
        "seed": 0,
        "epoch": 0,
        "step": 0,
        "rank": 0,
        "world_size": 1,
        "num_workers": 0,
        "jpeg_bytes": find_image("img2dataset__208_495.jpg").read_bytes(),
        "model": model,
        "opt": torch.optim.SGD(model.parameters(), lr=0.1),
    }
    if re.search(r"\bbatch\b", code):  # what the loader hands a training step (docs/augment.md's uint8 views)
        namespace["batch"] = next(iter(make_loader(index, batch_size=2, recipe="simclr", num_workers=0)))
    if "loader" in code:
        namespace["loader"] = make_loader(index, batch_size=4, num_workers=0)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "configs").symlink_to(REPO / "configs")  # blocks name configs/… relative to the repository
    exec(compile(code, block.id, "exec"), namespace)  # noqa: S102 (the documentation is the code under test)
    if "loader" in namespace:
        first = next(iter(namespace["loader"]))  # whatever the block built delivers a batch
        assert first is not None and len(first) > 0
    if "loss" in namespace:
        assert torch.isfinite(namespace["loss"]).all()


# ------------------------------------------------------------------------------------------- yaml blocks


@pytest.mark.parametrize("block", _params({"yaml"}))
def test_yaml_block(block: Block) -> None:
    from pass_wds.augment import Recipe, load_recipe

    data = yaml.safe_load(block.text)
    if isinstance(data, dict) and "views" in data:
        recipe = load_recipe(data)
        assert isinstance(recipe, Recipe) and recipe.name == data["name"]
