#!/usr/bin/env python
"""A small, real SimCLR run on a pass-wds stream under torchrun (CPU/gloo or GPU/NCCL).

It exists to prove the loader end to end: a tiny ResNet and an NT-Xent loss train on two augmented views per
image, and a checkpoint holds model, optimizer and loader state together, so a killed run resumes on exactly
the batch it would have seen next.

    torchrun --nproc_per_node 2 scripts/train_ssl.py --config configs/train_ssl.yaml --source OUT/index.json
    torchrun --nproc_per_node 2 scripts/train_ssl.py --source OUT/index.json --max-steps 20 --resume

Options default to ``configs/train_ssl.yaml`` values when ``--config`` is given; flags override them.
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import os
import sys
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

from pass_wds.loading import make_loader

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


def to_float(views: list[torch.Tensor], device: torch.device) -> list[torch.Tensor]:
    """uint8 views → normalised float on ``device`` (what a recipe's device stage does, minus colour ops)."""
    return [((v.to(device).float() / 255.0) - MEAN.to(device)) / STD.to(device) for v in views]


def fit(x: torch.Tensor, size: int) -> torch.Tensor:
    """Downscale a float batch so the tiny CPU model stays fast (SimCLR at 224 px needs a real GPU model)."""
    if size and x.shape[-1] > size:
        return F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return x


# -------------------------------------------------------------------------------------------------- setup

DEFAULTS: dict[str, Any] = {
    "source": None,
    "recipe": "simclr",
    "batch_size": 32,
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
    "checkpoint": "ssl-checkpoint.pt",
    "save_every": 50,
    "resume": False,
    "log_every": 10,
    "keys_log": None,
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--config")
    known, _ = pre.parse_known_args(argv)
    defaults = dict(DEFAULTS)
    if known.config:
        data = yaml.safe_load(Path(known.config).read_text()) or {}
        unknown = sorted(set(k.replace("-", "_") for k in data) - set(DEFAULTS))
        if unknown:
            raise SystemExit(f"error: unknown option(s) in {known.config}: {', '.join(unknown)}")
        defaults.update({k.replace("-", "_"): v for k, v in data.items()})
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", help="YAML file with defaults for the options below (configs/train_ssl.yaml)")
    p.add_argument("--source", help="index.json, brace pattern or list of shard URLs")
    p.add_argument("--recipe", help="augmentation recipe name/path (pass_wds.augment), or 'builtin'")
    p.add_argument("--batch-size", type=int, help="per rank")
    p.add_argument("--num-workers", type=int, help="DataLoader workers per rank")
    p.add_argument("--epochs", type=int)
    p.add_argument("--max-steps", type=int, help="stop after this many optimizer steps in total")
    p.add_argument("--lr", type=float, help="SGD learning rate (cosine decay over the run)")
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
    p.add_argument("--checkpoint", help="checkpoint file (model + optimizer + loader state)")
    p.add_argument("--save-every", type=int, help="steps between checkpoints (also saved at the end)")
    p.add_argument(
        "--resume", action=argparse.BooleanOptionalAction, help="continue from --checkpoint if present"
    )
    p.add_argument("--log-every", type=int)
    p.add_argument(
        "--keys-log", help="append each step's sample keys as JSON lines (rank-suffixed); for tests"
    )
    p.set_defaults(**defaults)
    args = p.parse_args(argv)
    if not args.source:
        p.error("--source is required (or set source: in --config)")
    return args


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


def save_checkpoint(path: str, state: dict[str, Any]) -> None:
    tmp = f"{path}.tmp-{os.getpid()}"
    torch.save(state, tmp)
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    rank, world, device = setup_distributed()
    torch.manual_seed(args.seed)
    recipe: Any = TwoViewCrop(args.image_size) if args.recipe == "builtin" else args.recipe
    loader = make_loader(
        args.source,
        batch_size=args.batch_size,
        recipe=recipe,
        num_workers=args.num_workers,
        seed=args.seed,
        remainder=args.remainder,
        shuffle_buffer_bytes=args.shuffle_buffer_bytes,
        device=str(device) if args.recipe != "builtin" else None,
    )
    model: nn.Module = TinyResNet(args.width, args.proj_dim).to(device)
    if world > 1:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model) if device.type == "cuda" else model
        model = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    opt = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9, weight_decay=args.weight_decay)
    total_steps = max(
        1, args.epochs * loader.batches_per_epoch
    )  # the schedule ignores --max-steps (a stop only)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: 0.5 * (1 + np.cos(np.pi * min(s, total_steps) / total_steps))
    )
    step = 0
    if args.resume and os.path.exists(args.checkpoint):
        ckpt = torch.load(args.checkpoint, map_location="cpu", weights_only=False)
        (model.module if isinstance(model, DistributedDataParallel) else model).load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["optimizer"])
        sched.load_state_dict(ckpt["scheduler"])
        loader.load_state_dict(ckpt["loader"])
        step = int(ckpt["step"])
        if rank == 0:
            log.info("resumed from %s at step %d (epoch %d)", args.checkpoint, step, loader.epoch)

    def checkpoint() -> None:
        if rank == 0:
            inner = model.module if isinstance(model, DistributedDataParallel) else model
            save_checkpoint(
                args.checkpoint,
                {
                    "model": inner.state_dict(),
                    "optimizer": opt.state_dict(),
                    "scheduler": sched.state_dict(),
                    "loader": loader.state_dict(),
                    "step": step,
                    "args": vars(args),
                },
            )
        if dist.is_initialized():
            dist.barrier()

    keys_log = open(f"{args.keys_log}.rank{rank}", "a") if args.keys_log else None  # noqa: SIM115
    model.train()
    t0, seen = time.perf_counter(), 0
    while loader.epoch < args.epochs and (args.max_steps is None or step < args.max_steps):
        for batch in loader:
            views = batch["views"]
            if args.recipe == "builtin" or views[0].dtype == torch.uint8:
                views = to_float(views, device)
            views = [fit(v.to(device), args.input_size) for v in views[:2]]
            loss = nt_xent(model(views[0]), model(views[1]), args.temperature)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            step += 1
            seen += len(batch["__key__"])
            if keys_log is not None:
                keys_log.write(
                    json.dumps({"step": step, "keys": batch["__key__"], "loss": loss.item()}) + "\n"
                )
                keys_log.flush()
            if rank == 0 and step % args.log_every == 0:
                rate = seen * world / (time.perf_counter() - t0)
                log.info("epoch %d step %d loss %.4f  %.1f img/s", loader.epoch, step, loss.item(), rate)
            if step % args.save_every == 0:
                checkpoint()
            if args.max_steps is not None and step >= args.max_steps:
                break
    checkpoint()
    if rank == 0:
        log.info("done: %d steps, loader stats: %d bad samples", step, loader.stats.errors)
    if keys_log is not None:
        keys_log.close()
    if dist.is_initialized():
        dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
