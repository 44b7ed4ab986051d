"""The code blocks of README.md and docs/*.md are run, so a documented call cannot go stale.

* ```python blocks are executed as written, each in a fresh namespace, with the repository's ``configs/`` and
  ``sample/`` beside them. The only liberty taken is where files are: ``/tmp/pass-wds-demo`` (what ``make
  demo`` writes) is this test's conversion of the bundled sample, other ``/tmp/pass-wds-*`` paths and
  ``/local/nvme/pass-cache`` go under the test's temporary folder, and ``s3://…/index.json`` URLs name a real
  moto S3 server that holds a copy of the demo output. Every ``loader`` a block builds is then iterated
  through a whole epoch.
* ```bash / ```sh blocks: every ``make-shards`` and ``pass-wds`` command is parsed by the real argparse
  parser; the ones that can run here also run, in order (``make-shards`` of the bundled sample, and
  ``verify``, ``inspect``, ``urls``, ``preview`` of an output). ``make`` targets must exist in the Makefile,
  and scripts must exist and accept the options used.
* ```yaml blocks must parse; a recipe (a mapping with ``views``) must load with ``load_recipe``.

A block that needs what a test cannot have (real PASS, a cluster, your own ``train.py``) is preceded by
``<!-- no-test: reason -->``, which the test honours (and reports as a skip with that reason); the reason
names the test or script that covers the same lines (``tests/…``, ``scripts/…``), unless the block only
installs packages.
"""

from __future__ import annotations

import functools
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
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


def test_untested_blocks_name_their_tested_twin() -> None:
    """A block the tests cannot run names the test (or script) that runs the same lines, and that file exists;
    only blocks that install packages into the reader's environment are exempt."""
    for b in BLOCKS:
        if b.no_test is None or b.no_test.startswith("installs packages"):
            continue
        twins = re.findall(r"(?:tests|scripts|benchmarks)/[\w/.-]+\.(?:py|sh)", b.no_test)
        assert twins, f"{b.id}: no-test without a tested twin: {b.no_test!r}"
        for twin in twins:
            assert (REPO / twin).is_file(), f"{b.id}: the named twin {twin} does not exist"


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


DEMO = "/tmp/pass-wds-demo"
TMP_PATH = re.compile(r"/tmp/pass-wds-[\w.-]+")


def _local_path(word: str, demo: Path, tmp_path: Path) -> str:
    """Where a documented path is in this test: the demo output (and the placeholders of an output) is the
    block's own copy of it, other ``/tmp/pass-wds-*`` paths live under the test's temporary folder."""
    if word in DEMO_OUTPUTS:
        return str(demo)
    if word.startswith("/data/"):  # the real dataset's files (only ever written here, never read)
        return str(tmp_path / word[1:])
    return TMP_PATH.sub(lambda m: str(demo) if m.group(0) == DEMO else str(tmp_path / m.group(0)[5:]), word)


def _runnable_make_shards(args: list[str]) -> bool:
    """A make-shards command of the bundled sample (its config or its files) runs here; PASS itself does not."""
    if args[:2] == ["--config", "configs/sample.yaml"]:
        return True
    return bool(args) and args[0].startswith("sample/")


@pytest.mark.parametrize("block", _params(SHELL))
def test_shell_block(
    block: Block,
    sample_out: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    demo = tmp_path / "pass-wds-demo"
    shutil.copytree(sample_out, demo)  # this block's own copy: a command here may rewrite it
    monkeypatch.chdir(tmp_path)
    checked = 0
    for argv in shell_commands(block.text):
        what = f"{block.id}: {shlex.join(argv)}"
        prog, args = argv[0], argv[1:]
        if prog == "make":
            missing = {a for a in args if not a.startswith("-") and "=" not in a} - _makefile_targets()
            assert not missing, f"{what}: no such Makefile target {missing}"
        elif prog == "make-shards" and args[:1] == ["update"]:  # revisions: run by tests/test_update.py
            from pass_wds.cli import update

            _parse(update.build(Parser, "make-shards update"), args[1:], capsys, what)
        elif prog == "make-shards":
            _parse(_make_shards_parser(), args, capsys, what)
            if _runnable_make_shards(args):
                run = [_local_path(a, demo, tmp_path) for a in args]
                r = subprocess.run(
                    [sys.executable, "-m", "pass_wds.cli", "make-shards", *run, "--no-progress"],
                    capture_output=True,
                    text=True,
                    cwd=REPO,
                    timeout=240,
                )
                assert r.returncode == 0, f"{what}: exit {r.returncode}: {r.stderr}"
                out = Path(run[run.index("--output") + 1])
                if "--dry-run" in args:
                    assert "nothing written" in r.stdout and not out.exists(), f"{what}: {r.stdout}{r.stderr}"
                else:
                    assert (out / "index.json").is_file(), f"{what}: no index.json: {r.stderr}"
        elif prog == "pass-wds":
            _parse(build_parser(), args, capsys, what)
            run = [_local_path(a, demo, tmp_path) for a in args]
            local = any(a != b for a, b in zip(args[1:], run[1:], strict=True))
            runs_here = ("verify", "inspect", "urls", "preview")
            if args[0] in runs_here and local and not PLACEHOLDER.search(" ".join(args)):
                code = pass_wds_main(run)
                assert code == 0, f"{what}: exit {code}\n{capsys.readouterr()}"
                if args[0] == "preview":
                    png = Path(run[run.index("--out") + 1])
                    assert png.is_file() and png.stat().st_size > 1000, f"{what}: no picture"
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
    """Where the documented files are in this test (see the module docstring); nothing else changes."""
    rules: list[Any] = [
        (TMP_PATH, lambda m: str(sample_out) if m.group(0) == DEMO else str(tmp_path / m.group(0)[5:])),
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
    if "datasets" in code:  # Hugging Face caches what it reads: here, not in the home folder
        hf = pytest.importorskip("datasets.config")
        monkeypatch.setattr(hf, "HF_DATASETS_CACHE", str(tmp_path / "hf"))
    monkeypatch.chdir(tmp_path)
    for name in ("configs", "sample"):  # blocks name configs/… and sample/… relative to the repository
        (tmp_path / name).symlink_to(REPO / name)
    namespace: dict[str, Any] = {"__name__": "__doc_block__"}
    exec(compile(code, block.id, "exec"), namespace)  # noqa: S102 (the documentation is the code under test)
    if "loader" in namespace:  # whatever the block built delivers a whole epoch of non-empty batches
        batches = list(namespace["loader"])
        assert batches and all(b is not None and len(b) > 0 for b in batches), block.id
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


# ------------------------------------------------------------------------------------------------- links

LINK = re.compile(r"\]\(([^)\s]+)\)")


def _anchors(path: Path) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens."""
    out = set()
    in_code = False
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("```"):
            in_code = not in_code
        elif not in_code and line.startswith("#"):
            title = line.lstrip("#").strip().lower()
            out.add(re.sub(r"[^\w\- ]", "", title).replace(" ", "-"))
    return out


def test_relative_links_resolve() -> None:
    """After moving text between README and docs/, every relative link (and #anchor) still lands somewhere."""
    broken = []
    for doc in DOCS:
        for target in LINK.findall(doc.read_text(encoding="utf-8")):
            if re.match(r"[a-z]+://|mailto:", target):
                continue
            file, _, anchor = target.partition("#")
            dest = (doc.parent / file).resolve() if file else doc
            if not dest.exists():
                broken.append(f"{doc.relative_to(REPO)}: {target} (no such file)")
            elif anchor and dest.suffix == ".md" and anchor not in _anchors(dest):
                broken.append(f"{doc.relative_to(REPO)}: {target} (no such heading)")
    assert not broken, "\n".join(broken)
