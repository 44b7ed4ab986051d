"""A PyTorch Lightning ``LightningDataModule`` around :func:`pass_wds.make_loader` (needs ``lightning``).

Rank and world size come from the trainer, each epoch's order from ``trainer.current_epoch``, and the loader's
position is saved in Lightning checkpoints (``state_dict``) and restored from them, so
``trainer.fit(model, dm, ckpt_path=...)`` continues mid-epoch on exactly the batch that comes next.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import lightning as L

from pass_wds.loading import Loader, make_loader


class _Epoch:
    """One epoch of the loader as Lightning sees it: an iterable with a length and nothing else, so Lightning
    neither wraps it with a sampler nor saves the (prefetched, one batch ahead) loader position itself."""

    def __init__(self, loader: Loader) -> None:
        self.loader = loader
        # The whole epoch, also when resumed mid-way: Lightning counts the batches done before the checkpoint.
        self.length = len(loader) + sum(g[2] for g in loader.state_dict()["generations"])

    def __len__(self) -> int:
        return self.length

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return iter(self.loader)


class PassDataModule(L.LightningDataModule):
    """``make_loader(source, batch_size=…, **loader_options)`` for ``Trainer.fit``; use the trainer with
    ``reload_dataloaders_every_n_epochs=1`` so every epoch gets its own order."""

    def __init__(self, source: str | Sequence[str], batch_size: int, **loader_options: Any) -> None:
        super().__init__()
        self.source, self.batch_size, self.options = source, batch_size, loader_options
        self.loader: Loader | None = None
        self._restored: dict[str, Any] | None = None

    def setup(self, stage: str) -> None:
        if self.loader is None:
            trainer = self.trainer
            assert trainer is not None
            self.loader = make_loader(
                self.source,
                batch_size=self.batch_size,
                rank=trainer.global_rank,
                world_size=trainer.world_size,
                **self.options,
            )
        if self._restored is not None:
            self.loader.load_state_dict(self._restored)
            self._restored = None

    def train_dataloader(self) -> _Epoch:
        assert self.loader is not None and self.trainer is not None
        state = self.loader.state_dict()
        if state["epoch"] != self.trainer.current_epoch or not state["generations"]:
            self.loader.set_epoch(self.trainer.current_epoch)
        return _Epoch(self.loader)

    def state_dict(self) -> dict[str, Any]:
        """The loader's position counted in batches the trainer has finished (the loader is a batch ahead)."""
        if self.loader is None or self.trainer is None:
            return {}
        state = self.loader.state_dict()
        progress: Any = self.trainer.fit_loop.epoch_loop.batch_progress.current
        done = int(progress.processed)  # "processed", not "completed": checkpoint callbacks run in between
        if state["generations"]:  # mid-epoch
            state["generations"][-1][2] = done - sum(g[2] for g in state["generations"][:-1])
        return {"loader": state}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._restored = state_dict.get("loader")
        if self._restored is not None and self.loader is not None:
            self.loader.load_state_dict(self._restored)
            self._restored = None
