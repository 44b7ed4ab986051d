#!/usr/bin/env python
r"""A small, real SimCLR run on a pass-wds stream (CPU/gloo or GPU/NCCL), one process per rank.

It exists to prove the loader end to end: a tiny ResNet and an NT-Xent loss train on two augmented views per
image, and a checkpoint holds model, optimizer and loader state together, so a stopped run resumes on exactly
the batch it would have seen next.

    python scripts/train_ssl.py --nproc-per-node 2 --config configs/train_ssl.yaml \
        --source OUT/index.json --output-dir RUN          # launches 2 ranks itself (torchrun's launcher)
    torchrun --nproc_per_node 2 scripts/train_ssl.py ...  # the same under torchrun / srun (multi-node)

Checkpoint (RUN/checkpoint.pt) and log (RUN/train.log) go to --output-dir; without it they go to
./pass-wds-runs/train_ssl, except inside the source tree, where --output-dir is required. A rerun of the same
command resumes when the checkpoint is from the same run (same data, loader and model settings), and says so;
--resume insists on resuming, --no-resume starts over. Ctrl-C (or SIGTERM) stops every rank with one line
each; errors in the options or the data are one line.

Options default to ``configs/train_ssl.yaml`` values when ``--config`` is given; flags override them.
"""

# ruff: noqa: E402
from __future__ import annotations

import os
import signal
import sys

_INTERRUPTED: list[int] = []  # signals received; set by _on_signal


def _who() -> str:
    return f"rank {os.environ['RANK']}" if "RANK" in os.environ else "train_ssl"


def _on_signal(signum: int, frame: object) -> None:
    """Before training starts: leave at once with one line. In the loop: stop at the next step boundary."""
    _INTERRUPTED.append(signum)
    if _TRAINING:
        return
    sys.stderr.write(f"{_who()}: {signal.Signals(signum).name}, stopped while starting\n")
    sys.stderr.flush()
    os._exit(128 + signum)


_TRAINING = False
if __name__ == "__main__":  # installed before torch imports, which take seconds
    signal.signal(signal.SIGINT, _on_signal)
    signal.signal(signal.SIGTERM, _on_signal)

import argparse
import io
import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
import yaml
from PIL import Image
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from pass_wds.compat import TorchMismatchError
from pass_wds.config import ConfigError
from pass_wds.format.errors import ShardError
from pass_wds.storage import StorageError

try:
    from pass_wds.loading import make_loader
except TorchMismatchError as e:  # one line naming both versions and the fix, not torchvision's traceback
    if os.environ.get("RANK", "0") == "0":
        sys.stderr.write(f"train_ssl: error: {e}\n")
    sys.exit(2)

log = logging.getLogger("train_ssl")
MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)


# ---------------------------------------------------------------------------------------------------- model


class Block(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.skip = (
            nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
            if stride != 1 or cin != cout
            else nn.Identity()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(y)) + self.skip(x))


class TinyResNet(nn.Module):
    """A 4-stage ResNet (one basic block per stage) with a 2-layer projection head, as in SimCLR."""

    def __init__(self, width: int = 16, proj_dim: int = 64) -> None:
        super().__init__()
        w = width
        self.stem = nn.Sequential(nn.Conv2d(3, w, 3, 1, 1, bias=False), nn.BatchNorm2d(w), nn.ReLU())
        self.stages = nn.Sequential(
            Block(w, w, 1), Block(w, 2 * w, 2), Block(2 * w, 4 * w, 2), Block(4 * w, 8 * w, 2)
        )
        self.head = nn.Sequential(nn.Linear(8 * w, 8 * w), nn.ReLU(), nn.Linear(8 * w, proj_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.stages(self.stem(x)).mean(dim=(2, 3))
        return self.head(h)


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float) -> torch.Tensor:
    """SimCLR's normalised-temperature cross entropy over the 2B views of this rank's batch."""
    z = F.normalize(torch.cat([z1, z2]), dim=1)
    sim = z @ z.t() / temperature
    n = z1.shape[0]
    sim.fill_diagonal_(float("-inf"))
    target = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(z.device)
    return F.cross_entropy(sim, target)


@torch.no_grad()
def pair_accuracy(z1: torch.Tensor, z2: torch.Tensor) -> float:
    """SimCLR's contrastive accuracy: the share of the 2B views whose most similar other view is their own
    partner (the other view of the same image). Chance is 1/(2B-1); an untrained or collapsed model sits there."""
    z = F.normalize(torch.cat([z1, z2]), dim=1)
    sim = z @ z.t()
    sim.fill_diagonal_(float("-inf"))
    n = z1.shape[0]
    target = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(z.device)
    return float((sim.argmax(dim=1) == target).float().mean())


def chance(batch: int) -> tuple[float, float]:
    """NT-Xent loss and pair accuracy of a model that tells no view from another: ln(2B-1) and 1/(2B-1)."""
    return float(np.log(2 * batch - 1)), 1.0 / (2 * batch - 1)


class Progress:
    """Loss and pair accuracy averaged over the steps since the last log line, next to their chance levels,
    and the first and last averages for the summary: what tells a researcher that the model is learning."""

    def __init__(self, batch: int) -> None:
        self.chance_loss, self.chance_acc = chance(batch)
        self.loss: list[float] = []
        self.acc: list[float] = []
        self.first: tuple[float, float] | None = None
        self.last: tuple[float, float] | None = None

    def add(self, loss: float, acc: float) -> None:
        self.loss.append(loss)
        self.acc.append(acc)

    def line(self) -> str:
        avg = (float(np.mean(self.loss)), float(np.mean(self.acc)))
        self.first = self.first or avg
        self.last = avg
        self.loss, self.acc = [], []
        return (
            f"loss {avg[0]:.3f} (chance {self.chance_loss:.3f})  "
            f"pair acc {avg[1]:.0%} (chance {self.chance_acc:.1%})"
        )

    def summary(self) -> str:
        if self.first is None or self.last is None:
            return ""
        (l0, a0), (l1, a1) = self.first, self.last
        return (
            f"; loss {l0:.3f} -> {l1:.3f} (chance {self.chance_loss:.3f}), "
            f"pair acc {a0:.0%} -> {a1:.0%} (chance {self.chance_acc:.1%})"
        )


# ------------------------------------------------------------------------------------------------ recipe


class TwoViewCrop:
    """Dependency-free two-view recipe (random resized crop + flip, uint8) for smoke runs: ``--recipe builtin``.

    The real recipes (``simclr``, ``mocov2`` …) come from ``pass_wds.augment`` and add colour augmentation.
    """

    def __init__(self, size: int = 32) -> None:
        self.size = size

    def _view(self, img: Image.Image, rng: np.random.Generator) -> torch.Tensor:
        w, h = img.size
        area = w * h * rng.uniform(0.2, 1.0)
        ratio = float(np.exp(rng.uniform(np.log(3 / 4), np.log(4 / 3))))
        cw = int(min(w, max(1, round((area * ratio) ** 0.5))))
        ch = int(min(h, max(1, round((area / ratio) ** 0.5))))
        x = int(rng.integers(0, w - cw + 1))
        y = int(rng.integers(0, h - ch + 1))
        view = img.resize((self.size, self.size), Image.Resampling.BILINEAR, box=(x, y, x + cw, y + ch))
        if rng.random() < 0.5:
            view = view.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        return torch.from_numpy(np.array(view, dtype=np.uint8)).permute(2, 0, 1).contiguous()

    def __call__(self, data: bytes, ext: str, rng: np.random.Generator) -> dict[str, Any]:
        with Image.open(io.BytesIO(data)) as im:
            im.draft("RGB", (self.size * 4, self.size * 4))
            img = im.convert("RGB")
        return {"views": [self._view(img, rng), self._view(img, rng)]}


def small_views(name: str, size: int) -> Any:
    """Recipe ``name`` with its largest view cropped to ``size`` px and every other view, blur kernel and blur
    sigma scaled with it: the same augmentation for a CPU demo, which a tiny model can learn in seconds."""
    import copy

    from pass_wds.augment import load_recipe
    from pass_wds.augment.recipes import Recipe

    config = copy.deepcopy(load_recipe(name).config)  # type: ignore[union-attr]
    scale = size / max(v.size for v in config.views)
    for v in config.views:
        v.size = max(8, round(v.size * scale))
        v.blur_kernel = max(3, round(v.blur_kernel * scale) // 2 * 2 + 1)
        v.blur_sigma = [max(0.05, s * scale) for s in v.blur_sigma]
    return Recipe(config)


def to_float(views: list[torch.Tensor], device: torch.device) -> list[torch.Tensor]:
    """uint8 views → normalised float on ``device`` (what a recipe's device stage does, minus colour ops)."""
    return [((v.to(device).float() / 255.0) - MEAN.to(device)) / STD.to(device) for v in views]


def fit(x: torch.Tensor, size: int) -> torch.Tensor:
    """Downscale a float batch so the tiny CPU model stays fast (SimCLR at 224 px needs a real GPU model)."""
    if size and x.shape[-1] > size:
        return F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return x


# -------------------------------------------------------------------------------------------------- setup

REPO = Path(__file__).resolve().parent.parent
DEFAULTS: dict[str, Any] = {
    "source": None,
    "recipe": "simclr",
    "view_size": 0,
    "optimizer": "sgd",
    "batch_size": 8,
    "num_workers": 2,
    "epochs": 1,
    "max_steps": None,
    "lr": 0.3,
    "weight_decay": 1e-6,
    "temperature": 0.2,
    "width": 16,
    "proj_dim": 64,
    "image_size": 32,
    "input_size": 64,
    "seed": 0,
    "shuffle_buffer_bytes": "64MB",
    "remainder": "drop",
    "cache_dir": None,
    "cache_bytes": "100GB",
    "output_dir": None,
    "save_every": 50,
    "resume": None,
    "log_every": 10,
    "keys_log": None,
}
# What makes a checkpoint "this run's": the loader's own fingerprint (shards, counts, seed, batch size, order
# options) plus these. Epochs and --max-steps may change between reruns (that is how a run is extended).
RUN_KEYS = (
    "recipe",
    "view_size",
    "optimizer",
    "lr",
    "weight_decay",
    "temperature",
    "width",
    "proj_dim",
    "image_size",
    "input_size",
)


class UsageError(Exception):
    """A mistake in the options, the config file or the data: reported as one line, exit status 2."""


class OneLineParser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(message)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    pre = OneLineParser(add_help=False)
    pre.add_argument("--config")
    known, _ = pre.parse_known_args(argv)
    defaults = dict(DEFAULTS)
    if known.config:
        try:
            data = yaml.safe_load(Path(known.config).read_text()) or {}
        except (OSError, yaml.YAMLError) as e:
            raise UsageError(f"--config {known.config}: {str(e).splitlines()[0]}") from None
        unknown = sorted(set(k.replace("-", "_") for k in data) - set(DEFAULTS))
        if unknown:
            raise UsageError(f"unknown option(s) in {known.config}: {', '.join(unknown)}")
        defaults.update({k.replace("-", "_"): v for k, v in data.items()})
    p = OneLineParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", help="YAML file with defaults for the options below (configs/train_ssl.yaml)")
    p.add_argument(
        "--nproc-per-node",
        type=int,
        help="launch this many ranks here (torchrun's launcher, quiet on errors)",
    )
    p.add_argument("--source", help="index.json, brace pattern or list of shard URLs")
    p.add_argument("--output-dir", help="checkpoint.pt and train.log go here (default: see above)")
    p.add_argument("--recipe", help="augmentation recipe name/path (pass_wds.augment), or 'builtin'")
    p.add_argument(
        "--view-size",
        type=int,
        help="crop the recipe's views to this many px, scaling its blur with them (0: the recipe's own size)",
    )
    p.add_argument("--batch-size", type=int, help="per rank")
    p.add_argument("--num-workers", type=int, help="DataLoader workers per rank")
    p.add_argument("--epochs", type=int, help="length of the run (and of the learning-rate schedule)")
    p.add_argument(
        "--max-steps", type=int, help="stop after this many optimizer steps in total (at most epochs)"
    )
    p.add_argument(
        "--optimizer", choices=["sgd", "adamw"], help="SGD with momentum 0.9, or AdamW (the CPU demo's)"
    )
    p.add_argument("--lr", type=float, help="learning rate (cosine decay over the epochs)")
    p.add_argument("--weight-decay", type=float)
    p.add_argument("--temperature", type=float, help="NT-Xent temperature")
    p.add_argument("--width", type=int, help="channels of the first ResNet stage")
    p.add_argument("--proj-dim", type=int, help="projection head output size")
    p.add_argument("--image-size", type=int, help="view size of the builtin recipe")
    p.add_argument(
        "--input-size", type=int, help="views larger than this are downscaled on the device (0: never)"
    )
    p.add_argument("--seed", type=int)
    p.add_argument("--shuffle-buffer-bytes", help="per worker, e.g. 64MB")
    p.add_argument("--remainder", choices=["drop", "pad"])
    p.add_argument("--cache-dir", help="node-local folder: remote shards are downloaded once per node")
    p.add_argument("--cache-bytes", help="cap of the node cache (LRU), e.g. 500GB")
    p.add_argument("--save-every", type=int, help="steps between checkpoints (also saved at the end)")
    p.add_argument(
        "--resume",
        action=argparse.BooleanOptionalAction,
        help="--resume: continue from the checkpoint (an error if it is missing or from another run); "
        "--no-resume: start over; default: resume only a checkpoint of this same run",
    )
    p.add_argument("--log-every", type=int)
    p.add_argument(
        "--keys-log", help="append each step's sample keys as JSON lines (rank-suffixed); for tests"
    )
    p.set_defaults(**defaults)
    args = p.parse_args(argv)
    if not args.source:
        raise UsageError("--source is required (or set source: in --config)")
    if args.optimizer not in ("sgd", "adamw"):
        raise UsageError(f"--optimizer: expected sgd or adamw, got {args.optimizer!r}")
    if args.view_size and args.view_size < 8:
        raise UsageError(f"--view-size must be >= 8 (or 0: the recipe's own), got {args.view_size}")
    for name in ("batch_size", "epochs", "save_every", "log_every"):
        if getattr(args, name) < 1:
            raise UsageError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if args.max_steps is not None and args.max_steps < 1:
        raise UsageError(f"--max-steps must be >= 1, got {args.max_steps}")
    args.output_dir = output_dir(args.output_dir)
    return args


def output_dir(given: str | None) -> str:
    """``given``, else ./pass-wds-runs/train_ssl, except inside this source tree (runs don't belong there)."""
    if given:
        return os.path.abspath(given)
    cwd = Path.cwd().resolve()
    if (REPO / "pyproject.toml").exists() and (cwd == REPO or REPO in cwd.parents):
        raise UsageError(
            f"--output-dir is required when running inside the source tree ({REPO}): "
            "checkpoints and logs do not belong there"
        )
    return str(cwd / "pass-wds-runs" / "train_ssl")


def setup_distributed() -> tuple[int, int, torch.device]:
    """Initialise the process group from torchrun's environment (NCCL with GPUs, gloo otherwise)."""
    device = torch.device("cpu")
    if torch.cuda.is_available():
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        torch.cuda.set_device(device)
    if "RANK" in os.environ and not dist.is_initialized():
        if device.type == "cuda":
            dist.init_process_group("nccl", device_id=device)
        else:
            dist.init_process_group("gloo")
    rank = dist.get_rank() if dist.is_initialized() else 0
    world = dist.get_world_size() if dist.is_initialized() else 1
    return rank, world, device


def agree(problem: str | None) -> None:
    """Every rank calls this at the same point; if any rank has a problem, rank 0 prints it (once, in one
    line, naming the ranks when not all have it) and every rank exits with status 2."""
    problems = [problem]
    if dist.is_initialized():
        problems = [None] * dist.get_world_size()
        dist.all_gather_object(problems, problem)
    bad = {i: p for i, p in enumerate(problems) if p}
    if not bad:
        return
    global _TRAINING
    _TRAINING = True  # from here a signal (the launcher ending the others) only gets recorded
    if not dist.is_initialized() or dist.get_rank() == 0:
        for msg in dict.fromkeys(bad.values()):
            ranks = [i for i, p in bad.items() if p == msg]
            where = "" if len(ranks) == len(problems) else f" (rank {', '.join(map(str, ranks))})"
            sys.stderr.write(f"train_ssl: error{where}: {msg}\n")
    quit_now(2)


def same_everywhere(step: int, path: str) -> str | None:
    """All ranks must start from the same step: a checkpoint only some nodes can see is a problem."""
    if not dist.is_initialized():
        return None
    steps: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(steps, step)
    if len(set(steps)) == 1:
        return None
    return f"the ranks see different checkpoints at {path} (steps {sorted(set(steps))}): --output-dir must be a folder every node shares"


def quit_now(code: int) -> None:
    """Exit without teardown: peers may be gone, and DataLoader workers notice their parent's exit."""
    global _TRAINING
    _TRAINING = True  # a SIGTERM from the launcher while leaving is not news
    sys.stderr.flush()
    sys.stdout.flush()
    os._exit(code)


def save_checkpoint(path: str, state: dict[str, Any]) -> None:
    tmp = f"{path}.tmp-{os.getpid()}"
    torch.save(state, tmp)
    os.replace(tmp, path)


def command_line_words(message: str) -> str:
    """The loader speaks Python (``remainder='pad'``); say the same with this script's options."""
    for python, flag in (
        ("remainder='pad'", "--remainder pad"),
        ("a smaller batch size", "a smaller --batch-size"),
        ("a larger epoch", "fewer ranks"),
    ):
        message = message.replace(python, flag)
    return message


def run_identity(args: argparse.Namespace, loader_fingerprint: str) -> dict[str, Any]:
    return {"loader": loader_fingerprint, **{k: getattr(args, k) for k in RUN_KEYS}}


def choose_start(args: argparse.Namespace, path: str, identity: dict[str, Any]) -> dict[str, Any] | None:
    """The checkpoint to resume from, or None to start over; a problem is a one-line UsageError."""
    if not os.path.exists(path):
        if args.resume:
            raise UsageError(f"--resume: there is no checkpoint in {args.output_dir}")
        return None
    if args.resume is False:
        return None
    try:
        ckpt: dict[str, Any] = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:  # noqa: BLE001 - any unreadable file is the same problem for the user
        raise UsageError(f"cannot read {path} ({type(e).__name__}); use --no-resume to start over") from None
    old = ckpt.get("identity", {})
    changed = [k for k in identity if old.get(k) != identity[k]]
    if changed:
        what = ", ".join("data/loader settings" if k == "loader" else k for k in changed)
        raise UsageError(
            f"{path} is from a different run (changed: {what}); use another --output-dir, "
            "or --no-resume to start over there"
        )
    return ckpt


def launch(nproc: int, argv: list[str]) -> int:
    """Run this script on ``nproc`` local ranks with torchrun's launcher, leaving the talking to the ranks
    (torchrun itself would add a failure report with its own traceback to every error and Ctrl-C)."""
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import parse_args as torchrun_args
    from torch.distributed.run import run as torchrun

    for name in list(logging.root.manager.loggerDict):
        if name.startswith("torch.distributed"):
            logging.getLogger(name).setLevel(logging.CRITICAL)
    try:
        torchrun(torchrun_args(["--standalone", "--nproc-per-node", str(nproc), __file__, *argv]))
    except SignalException as e:
        return 128 + int(e.sigval)
    except ChildFailedError as e:
        codes = [f.exitcode for f in e.failures.values()]
        return next((c for c in codes if c > 0), 128 + signal.SIGTERM)
    return 0


# -------------------------------------------------------------------------------------------------- train


def main(argv: list[str] | None = None) -> int:
    global _TRAINING
    argv = sys.argv[1:] if argv is None else argv
    rank0 = os.environ.get("RANK", "0") == "0"
    try:
        args = parse_args(argv)
    except UsageError as e:
        if rank0:  # every rank parses the same command line
            sys.stderr.write(f"train_ssl: error: {e}\n")
        return 2
    if args.nproc_per_node and "LOCAL_RANK" not in os.environ:
        return launch(args.nproc_per_node, argv)
    rank, world, device = setup_distributed()
    ckpt_path = os.path.join(args.output_dir, "checkpoint.pt")
    # rank 0 reports; the others only warn (every rank would log the same dropped samples)
    logging.basicConfig(
        level=logging.INFO if rank == 0 else logging.WARNING, format="%(asctime)s %(name)s: %(message)s"
    )
    torch.manual_seed(args.seed)
    problem = None
    loader: Any = None
    try:
        recipe: Any = args.recipe
        if args.recipe == "builtin":
            recipe = TwoViewCrop(args.image_size)
        elif args.view_size:
            recipe = small_views(args.recipe, args.view_size)
        loader = make_loader(
            args.source,
            batch_size=args.batch_size,
            recipe=recipe,
            num_workers=args.num_workers,
            seed=args.seed,
            remainder=args.remainder,
            shuffle_buffer_bytes=args.shuffle_buffer_bytes,
            cache_dir=args.cache_dir,
            cache_bytes=args.cache_bytes,
            device=str(device) if args.recipe != "builtin" else None,
        )
        identity = run_identity(args, loader.state_dict()["fingerprint"])
        ckpt = choose_start(args, ckpt_path, identity)
        if rank == 0:
            os.makedirs(args.output_dir, exist_ok=True)
    except (UsageError, ConfigError, ShardError, StorageError, OSError) as e:
        problem = command_line_words(str(e).splitlines()[0]) if str(e) else type(e).__name__
    agree(problem)
    agree(same_everywhere(-1 if ckpt is None else int(ckpt["step"]), ckpt_path))
    if rank == 0:
        handler = logging.FileHandler(os.path.join(args.output_dir, "train.log"))
        handler.setFormatter(logging.Formatter("%(asctime)s %(name)s: %(message)s"))
        logging.getLogger().addHandler(handler)

    model: nn.Module = TinyResNet(args.width, args.proj_dim).to(device)
    if world > 1:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model) if device.type == "cuda" else model
        model = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    inner = model.module if isinstance(model, DistributedDataParallel) else model
    opt: torch.optim.Optimizer
    if args.optimizer == "adamw":
        opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    else:
        opt = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9, weight_decay=args.weight_decay)
    total_steps = args.epochs * loader.batches_per_epoch  # the schedule spans the epochs; --max-steps stops
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: 0.5 * (1 + np.cos(np.pi * min(s, total_steps) / total_steps))
    )
    step = saved = 0
    if ckpt is not None:
        inner.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["optimizer"])
        sched.load_state_dict(ckpt["scheduler"])
        loader.load_state_dict(ckpt["loader"])
        step = saved = int(ckpt["step"])
    stop = total_steps if args.max_steps is None else min(args.max_steps, total_steps)
    if rank == 0:
        plan = f"{args.epochs} epochs x {loader.batches_per_epoch} steps = {total_steps} steps"
        if ckpt is not None:
            log.info(
                "resumed from %s at step %d, epoch %d (same data and settings)",
                ckpt_path,
                step,
                loader.epoch,
            )
        elif os.path.exists(ckpt_path):
            log.info("starting over (--no-resume): %s will be replaced", ckpt_path)
        else:
            log.info("training from scratch; checkpoint and log in %s", args.output_dir)
        if args.max_steps is not None and args.max_steps > total_steps:
            log.info("--max-steps %d is beyond %s: stopping at step %d", args.max_steps, plan, total_steps)
        loss0, acc0 = chance(args.batch_size)
        log.info(
            "%s; each rank contrasts the 2 x %d views of its batch: a model that has learnt nothing scores "
            "loss %.3f = ln(%d) and pair acc %.1f%% = 1/%d (the share of views whose nearest view is their "
            "partner); below that loss and above that accuracy, it is learning",
            plan, args.batch_size, loss0, 2 * args.batch_size - 1, 100 * acc0, 2 * args.batch_size - 1,
        )  # fmt: skip
    if step >= stop:
        if rank == 0:
            log.info(
                "nothing to do: the checkpoint is at step %d of %s (--max-steps %s); raise --epochs or "
                "--max-steps to train further, or --no-resume to start over",
                step, plan, args.max_steps,
            )  # fmt: skip
        if dist.is_initialized():
            dist.destroy_process_group()
        return 0

    def state() -> dict[str, Any]:
        return {
            "model": inner.state_dict(),
            "optimizer": opt.state_dict(),
            "scheduler": sched.state_dict(),
            "loader": loader.state_dict(),
            "step": step,
            "identity": identity,
            "args": vars(args),
        }

    def checkpoint() -> None:
        nonlocal saved
        if rank == 0:
            save_checkpoint(ckpt_path, state())
        if dist.is_initialized():
            dist.barrier()
        saved = step

    progress = Progress(args.batch_size)
    keys_log = open(f"{args.keys_log}.rank{rank}", "a") if args.keys_log else None  # noqa: SIM115
    model.train()
    t0, seen = time.perf_counter(), 0
    _TRAINING = True
    clean = True  # False: a step failed half-way (a peer stopped first)
    try:
        while step < stop and loader.epoch < args.epochs and not _INTERRUPTED:
            for batch in loader:
                views = batch["views"]
                if args.recipe == "builtin" or views[0].dtype == torch.uint8:
                    views = to_float(views, device)
                views = [fit(v.to(device), args.input_size) for v in views[:2]]
                z1, z2 = model(views[0]), model(views[1])
                loss = nt_xent(z1, z2, args.temperature)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                step += 1
                seen += len(batch["__key__"])
                if rank == 0:
                    progress.add(loss.item(), pair_accuracy(z1, z2))
                if keys_log is not None:
                    record = {"step": step, "keys": batch["__key__"], "loss": loss.item()}
                    keys_log.write(json.dumps(record) + "\n")
                    keys_log.flush()
                if rank == 0 and step % args.log_every == 0:
                    rate = seen * world / (time.perf_counter() - t0)
                    log.info("epoch %d step %d  %s  %.1f img/s", loader.epoch, step, progress.line(), rate)
                if step % args.save_every == 0:
                    checkpoint()
                if step >= stop or _INTERRUPTED:
                    break
        if not _INTERRUPTED:
            checkpoint()
    except Exception as e:
        clean = False
        if (
            not _INTERRUPTED
        ):  # a peer that stopped on Ctrl-C breaks our collective before our signal is handled
            time.sleep(0.5)
        if not _INTERRUPTED:
            if isinstance(e, ShardError | StorageError):  # the data went bad mid-run: say which, in one line
                sys.stderr.write(f"train_ssl: error (rank {rank}): {str(e).splitlines()[0]}\n")
                quit_now(2)
            raise
    if _INTERRUPTED:
        # Rank 0 stopped after a complete step: its model (DDP keeps ranks equal), optimizer and loader state
        # are the run's at this step, so it saves them without waiting for the others.
        if rank == 0 and clean and step > saved:
            save_checkpoint(ckpt_path, state())
            saved = step
        where = (
            f"; the checkpoint of step {saved} is in {args.output_dir}" if saved else "; no checkpoint yet"
        )
        name = signal.Signals(_INTERRUPTED[0]).name
        sys.stderr.write(
            f"rank {rank}: {name}, stopped at step {step} (epoch {loader.epoch})"
            + (f"{where} (rerun the same command to resume)" if rank == 0 else "")
            + "\n"
        )
        quit_now(128 + _INTERRUPTED[0])
    if rank == 0:
        log.info(
            "done: %d steps%s; loader stats: %d bad samples", step, progress.summary(), loader.stats.errors
        )
    if keys_log is not None:
        keys_log.close()
    if dist.is_initialized():
        dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
