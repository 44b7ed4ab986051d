"""What make-shards tells its user: a progress bar or log lines while it runs, the summary at the end, and
the description of a plan (``--dry-run``)."""

from __future__ import annotations

import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pass_wds import storage
from pass_wds.convert.writing import ShardResult
from pass_wds.format import manifest
from pass_wds.storage.log import get_logger

if TYPE_CHECKING:
    from pass_wds.convert.options import ConvertConfig
    from pass_wds.convert.prepare import Prepared

log = get_logger("pass_wds.make_shards")


@dataclass
class Summary:
    """What a run did: shards, samples, bytes, rejections by reason (what :meth:`lines` prints); the return
    value of :func:`pass_wds.make_shards`."""

    output: str
    shards: int = 0
    shards_resumed: int = 0
    samples: int = 0
    output_bytes: int = 0
    input_bytes: int = 0
    rejected: Counter[str] = field(default_factory=Counter)
    metadata_without_image: int = 0
    seconds: float = 0.0
    partial: tuple[int, int] | None = None
    resumed_samples: int = 0  # samples in the shards kept from earlier runs (not written by this run)
    resumed_bytes: int = 0

    @classmethod
    def of(cls, output: str, results: list[ShardResult], started: float, **kw: Any) -> Summary:
        """Totals of the shards written (or kept) by this run."""
        return cls(
            output,
            shards=len(results),
            samples=sum(r.nsamples for r in results),
            output_bytes=sum(r.filesize for r in results),
            input_bytes=sum(r.input_bytes for r in results),
            seconds=time.monotonic() - started,
            **kw,
        )

    def lines(self) -> list[str]:
        if self.partial is not None:
            a, b = self.partial
            return [
                f"shards {a}..{b - 1}: {self.shards} complete ({self.shards_resumed} from earlier runs), "
                f"{self.samples:,} samples, {self.output_bytes / 1e6:,.1f} MB in {self.seconds:.1f}s; "
                "run without --shard-range once every range is done to write the manifest"
            ]
        if self.shards and self.shards_resumed == self.shards and not self.seconds:
            return [
                f"{storage.redact(self.output)} is already complete for these inputs and options: "
                f"{self.samples:,} samples in {self.shards} shards; nothing to do"
            ]
        # Rates count only what this run wrote: kept shards cost it nothing, so counting them would flatter it.
        written = self.samples - self.resumed_samples
        written_bytes = self.output_bytes - self.resumed_bytes
        rate = written / self.seconds if self.seconds else 0.0
        mbps = written_bytes / 1e6 / self.seconds if self.seconds else 0.0
        out = [
            f"wrote {self.samples:,} samples in {self.shards} shards ({self.output_bytes / 1e6:,.1f} MB) "
            f"to {storage.redact(self.output)} in {self.seconds:.1f}s ({rate:,.0f} img/s, {mbps:,.1f} MB/s, "
            "listing included)",
        ]
        if self.shards_resumed:
            out[0] = (
                f"wrote {written:,} samples in {self.shards - self.shards_resumed} shards "
                f"({written_bytes / 1e6:,.1f} MB) to {storage.redact(self.output)} in {self.seconds:.1f}s "
                f"({rate:,.0f} img/s, {mbps:,.1f} MB/s, listing included)"
            )
            out.append(
                f"kept {self.shards_resumed} shards ({self.resumed_samples:,} samples, "
                f"{self.resumed_bytes / 1e6:,.1f} MB) completed by an earlier run: "
                f"{self.samples:,} samples in {self.shards} shards in all"
            )
        total = sum(self.rejected.values())
        detail = ", ".join(f"{r} {n}" for r, n in sorted(self.rejected.items()))
        out.append(f"rejected {total} inputs" + (f" ({detail}); see errors.jsonl" if total else ""))
        if self.metadata_without_image:
            out.append(
                f"{self.metadata_without_image} metadata rows have no image (see {manifest.UNMATCHED})"
            )
        return out


class Progress:
    """A tqdm bar on a terminal (samples/s, MB/s, ETA); periodic plain log lines otherwise."""

    def __init__(
        self,
        prep: Prepared,
        cfg: ConvertConfig,
        wanted: range,
        already: dict[int, int],
        callback: Callable[..., Any] | None,
    ):
        self.total = sum(len(prep.plan.shards[s]) for s in wanted)
        self.shards = len(wanted)
        self.done_samples = sum(already.values())
        self.done_shards = len(already)
        self.kept_samples = self.done_samples  # the bar and the log lines rate only what this run writes
        self.bytes = 0
        self.t0 = time.monotonic()
        self.last_log = self.t0
        self.callback = callback
        show = cfg.progress if cfg.progress is not None else sys.stderr.isatty()
        self.bar = None
        if show:
            from tqdm import tqdm

            self.bar = tqdm(
                total=self.total,
                initial=self.done_samples,
                unit="img",
                unit_scale=True,
                desc="make-shards",
                dynamic_ncols=True,
                smoothing=0,  # the average rate of this run, as the log lines and the summary give it
            )

    def shard_done(self, result: ShardResult, planned: int) -> None:
        self.done_samples += planned
        self.done_shards += 1
        self.bytes += result.filesize
        elapsed = max(time.monotonic() - self.t0, 1e-9)
        if self.bar is not None:
            self.bar.update(planned)
            self.bar.set_postfix(
                shards=f"{self.done_shards}/{self.shards}", MBps=f"{self.bytes / 1e6 / elapsed:.1f}"
            )
        elif time.monotonic() - self.last_log >= 10 or self.done_shards == self.shards:
            self.last_log = time.monotonic()
            rate = (self.done_samples - self.kept_samples) / elapsed
            eta = (self.total - self.done_samples) / rate if rate else 0.0
            log.info(
                "%d/%d shards, %d/%d images, %.0f img/s, %.1f MB/s over %.1fs, ETA %.0fs",
                self.done_shards,
                self.shards,
                self.done_samples,
                self.total,
                rate,
                self.bytes / 1e6 / elapsed,
                elapsed,
                eta,
            )
        if self.callback is not None:
            self.callback(self.done_shards, self.shards)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def describe_plan(cfg: ConvertConfig, prep: Prepared) -> list[str]:
    """What ``--dry-run`` prints: inputs, samples, the plan's shards and sizes, rejections; nothing written."""
    plan = prep.plan
    sp = plan.spread()
    rejected = Counter(r.reason for r in prep.rejections)
    detail = ", ".join(f"{r} {n}" for r, n in sorted(rejected.items()))
    listed = len(prep.items) + len(prep.rejections)
    image_bytes = int(prep.items.sizes.sum())
    out = [
        f"dry run: {len(prep.inputs)} inputs, {listed:,} files listed, {len(prep.items):,} samples to write "
        f"({image_bytes / 1e6:,.1f} MB of images)",
        f"plan: {len(plan.shards)} shards of {sp['mean'] / 1e6:,.1f} MB on average "
        f"(min {sp['min'] / 1e6:,.1f}, max {sp['max'] / 1e6:,.1f} MB; target {cfg.shard_size}), "
        f"{plan.num_samples / max(1, len(plan.shards)):,.0f} samples per shard, {plan.num_samples:,} in all",
        f"rejected {sum(rejected.values())} inputs"
        + (f" ({detail})" if detail else "")
        + " (images that fail to decode are found only while writing)",
    ]
    if prep.unmatched_metadata:
        out.append(f"{len(prep.unmatched_metadata):,} metadata rows have no image")
    out.append(f"nothing written to {storage.redact(str(cfg.output))}")
    return out
