"""The ecosystem recipes of docs/integration.md, run as written: Hugging Face ``datasets`` on an output (multi-format shards
included) and a Lightning ``LightningDataModule`` with epochs and exact mid-epoch resume."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from conftest import FakeOutputs


@pytest.fixture(scope="module")
def out(fake_outputs: FakeOutputs) -> Path:
    return fake_outputs.small_output("250KB", n_images=40)


def test_hugging_face_datasets_reads_every_sample_of_every_format(tmp_path: Path) -> None:
    datasets = pytest.importorskip("datasets")
    from pass_wds import ConvertConfig, make_shards

    sample = Path(__file__).resolve().parents[1] / "sample"
    out = tmp_path / "out"
    make_shards(
        ConvertConfig(
            inputs=[str(p) for p in sorted(sample.glob("PASS.*.tar"))],
            metadata=str(sample / "pass_metadata.csv"),
            output=str(out),
            shard_size="1MB",
            progress=False,
        )
    )
    exts = {line.split()[0] for p in out.glob("*.idx") for line in p.read_text().splitlines()[1:]}
    assert exts == {"jpg", "png"}  # the bundled sample has a PNG among its JPEGs
    n = sum(int(p.read_text().split()[1]) for p in out.glob("*.idx"))

    # --- docs/integration.md: "Reading the shards with other tools" (the same lines, on this output) ---
    from datasets import Features, Image, Json, Value, load_dataset

    files = {"train": str(out / "pass-*.tar")}
    IMAGES = ("jpg", "png", "webp", "gif", "tif")
    features = Features(
        {
            "__key__": Value("string"),
            "__url__": Value("string"),
            "json": Json(),
            **{ext: Image() for ext in IMAGES},
        }
    )
    ds = load_dataset(
        "webdataset", data_files=files, split="train", features=features, cache_dir=str(tmp_path / "hf")
    )

    def one_image(batch: dict[str, Any]) -> dict[str, Any]:
        rows = zip(*(batch.pop(e) for e in IMAGES), strict=True)
        batch["image"] = [next(im for im in row if im is not None) for row in rows]
        return batch

    rows = ds.with_transform(one_image)
    # ---
    assert datasets.__version__ and len(ds) == n
    assert sorted(ds["__key__"]) == sorted(
        line.split()[3].split(".")[0] for p in out.glob("*.idx") for line in p.read_text().splitlines()[1:]
    )
    assert sum(r is not None for r in ds["png"]) == 1 and sum(r is not None for r in ds["jpg"]) == n - 1
    assert [r["image"].format for r in rows].count("PNG") == 1 and all(r["image"].size[0] > 0 for r in rows)
    assert all(j["_provenance"]["key"] == k for j, k in zip(ds["json"], ds["__key__"], strict=True))


def _fit(out: Path, root: Path, *, every: int | None = None, ckpt: Path | None = None) -> list[str]:
    import lightning as L
    import torch

    from pass_wds.lightning import PassDataModule

    seen: list[str] = []

    class Tiny(L.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.net = torch.nn.Linear(3, 1)

        def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
            seen.extend(batch["__key__"])
            x = batch["image"].float().mean(dim=(2, 3))
            return self.net(x).pow(2).mean()

        def configure_optimizers(self) -> torch.optim.Optimizer:
            return torch.optim.SGD(self.parameters(), lr=0.01)

    dm = PassDataModule(str(out), batch_size=4, recipe="eval", num_workers=0, seed=3)
    checkpoints = [
        L.pytorch.callbacks.ModelCheckpoint(root, "{step}", every_n_train_steps=every, save_top_k=-1)
    ]
    trainer = L.Trainer(
        max_epochs=2, accelerator="cpu", devices=1, logger=False, callbacks=checkpoints if every else None,
        enable_checkpointing=bool(every), enable_progress_bar=False, enable_model_summary=False,
        reload_dataloaders_every_n_epochs=1, default_root_dir=str(root),
    )  # fmt: skip
    trainer.fit(Tiny(), dm, ckpt_path=str(ckpt) if ckpt else None)
    return seen


def test_lightning_datamodule_epochs_and_exact_mid_epoch_resume(out: Path, tmp_path: Path) -> None:
    pytest.importorskip("lightning")
    whole = _fit(out, tmp_path / "a", every=3)  # a checkpoint every 3 steps, as a long run would keep
    per_epoch = len(whole) // 2
    assert per_epoch >= 4 * 5 and len(set(whole[:per_epoch])) == per_epoch  # each epoch: every sample once
    assert whole[:per_epoch] != whole[per_epoch:]  # and a new order in the next one
    steps = per_epoch // 4
    for step in (steps - steps % 3, steps + 3 - (steps + 3) % 3):  # one in each epoch
        if step % steps == 0:
            continue  # an epoch boundary, not mid-epoch
        rest = _fit(out, tmp_path / f"r{step}", ckpt=tmp_path / "a" / f"step={step}.ckpt")
        assert rest == whole[4 * step :], step  # killed after `step` steps: resumes on exactly the next batch
