"""The bad inputs make-shards must reject, and the unusual but valid ones it must keep, planted at seeded
positions among the good images; each is recorded in ``expected.json`` with its reason."""

from __future__ import annotations

import hashlib
import tarfile
import zlib
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from pass_wds.fakedata.images import encode_jpeg, encode_png, synth_image
from pass_wds.fakedata.layout import Member, accepted_entry, member_name, pass_hash
from pass_wds.fakedata.metadata import metadata_row
from pass_wds.format import reasons

if TYPE_CHECKING:
    from pass_wds.fakedata.raw import FakePassConfig


def truncated_jpeg(rng: np.random.Generator) -> bytes:
    full = encode_jpeg(synth_image(rng, 400, 300), 90)
    return full[: len(full) // 2]


def bomb_png(width: int = 16_000, height: int = 12_500) -> bytes:
    """A real 1-bit PNG of 200 Mpixel in ~25 kB: over twice Pillow's default MAX_IMAGE_PIXELS, so
    ``Image.open`` raises DecompressionBombError (and any lower custom limit rejects it too)."""

    def chunk(tag: bytes, body: bytes) -> bytes:
        return len(body).to_bytes(4, "big") + tag + body + zlib.crc32(tag + body).to_bytes(4, "big")

    row = b"\x00" + b"\x00" * ((width + 7) // 8)
    comp = zlib.compressobj(9)
    parts = [comp.compress(row) for _ in range(height)]
    idat = b"".join(parts) + comp.flush()
    ihdr = width.to_bytes(4, "big") + height.to_bytes(4, "big") + bytes([1, 0, 0, 0, 0])
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def plant_bad(
    cfg: FakePassConfig,
    rng: np.random.Generator,
    archives: list[str],
    per_part: list[int],
    extras: list[list[tuple[int, Member]]],
    accepted: dict[str, dict[str, Any]],
    rejected: list[dict[str, Any]],
    rows: list[dict[str, str]],
) -> None:
    """Insert the bad (and unusual-but-valid) inputs at seeded positions in the parts."""
    counter = iter(range(10**6))

    def new_key() -> str:
        return pass_hash(cfg.seed, "bad", next(counter))

    def place(part: int, m: Member, pos: int | None = None) -> int:
        pos = int(rng.integers(0, per_part[part] + 1)) if pos is None else pos
        extras[part].append((pos, m))
        return pos

    def reject(part: int, m: Member, key: str, reason: str, note: str, with_row: bool = True) -> None:
        place(part, m)
        rejected.append(
            {"key": key, "archive": archives[part], "member": m.name, "reason": reason, "note": note}
        )
        if with_row:
            rows.append(metadata_row(rng, key, hard=False))

    def keep(part: int, key: str, data: bytes, fmt: str, img: Image.Image, prog: bool) -> None:
        m = Member(member_name(key), data)
        place(part, m)
        accepted[key] = accepted_entry(
            archives[part], m.name, data, fmt, img.width, img.height, img.mode, prog
        )
        rows.append(metadata_row(rng, key, hard=True))

    last = len(archives) - 1
    pick = lambda: int(rng.integers(0, len(archives)))  # noqa: E731

    # valid but unusual: kept
    base = synth_image(rng, 500, 333)
    keep(pick(), new_key(), encode_png(base), "PNG", base, False)  # PNG bytes under a .jpeg name
    cmyk = base.convert("CMYK")
    keep(pick(), new_key(), encode_jpeg(cmyk, 90), "JPEG", cmyk, False)
    gray = base.convert("L")
    keep(pick(), new_key(), encode_jpeg(gray, 88), "JPEG", gray, False)
    keep(pick(), new_key(), encode_jpeg(base, 90, progressive=True), "JPEG", base, True)

    # bad content: rejected at validation
    k = new_key()
    reject(pick(), Member(member_name(k), truncated_jpeg(rng)), k, reasons.CORRUPT, "JPEG cut in half")
    k = new_key()
    reject(pick(), Member(member_name(k), b""), k, reasons.EMPTY, "zero-byte member")
    k = new_key()
    text = b"this is not an image, just text\nwith a second line\n"
    reject(pick(), Member(member_name(k), text), k, reasons.NOT_AN_IMAGE, "plain text under a .jpeg name")
    k = new_key()
    reject(
        pick(),
        Member(member_name(k), bomb_png()),
        k,
        reasons.BOMB,
        "1-bit PNG declaring 16000x12500 (200 Mpixel)",
    )

    # bad members: rejected while listing the tar
    k = new_key()
    reject(pick(), Member(member_name(k), type=tarfile.DIRTYPE), k, reasons.NOT_REGULAR, "directory member")
    k = new_key()
    reject(
        pick(),
        Member(member_name(k), type=tarfile.SYMTYPE, linkname="/etc/passwd"),
        k,
        reasons.NOT_REGULAR,
        "symlink to /etc/passwd",
    )
    k = new_key()
    reject(pick(), Member(member_name(k), type=tarfile.CHRTYPE), k, reasons.NOT_REGULAR, "character device")
    ok_img = encode_jpeg(synth_image(rng, 300, 200), 90)
    k = new_key()
    reject(
        pick(),
        Member(f"/tmp/pass_wds_escape_{k}/{k}.jpeg", ok_img),
        k,
        reasons.UNSAFE_PATH,
        "absolute member path",
    )
    k = new_key()
    reject(
        pick(),
        Member(f"PASS_dataset/../../pass_wds_escape_{k}/{k}.jpeg", ok_img),
        k,
        reasons.UNSAFE_PATH,
        "member path with '..'",
    )

    # a valid image with no metadata row
    k = new_key()
    miss = encode_jpeg(synth_image(rng, 500, 375), 90)
    reject(
        pick(),
        Member(member_name(k), miss),
        k,
        reasons.MISSING_METADATA,
        "valid JPEG whose hash has no metadata row",
        with_row=False,
    )
    rejected[-1]["kept_with_allow_missing_metadata"] = True
    rejected[-1]["sha256"] = hashlib.sha256(miss).hexdigest()

    # the same key in two archives: the first (lowest part index, as inputs are listed) wins
    k = new_key()
    first_img = synth_image(rng, 500, 400)
    first = encode_jpeg(first_img, 90)
    m_first = Member(member_name(k), first)
    pos_first = place(0, m_first)
    accepted[k] = accepted_entry(
        archives[0], m_first.name, first, "JPEG", first_img.width, first_img.height, "RGB", False
    )
    rows.append(metadata_row(rng, k, hard=True))
    second = encode_jpeg(synth_image(rng, 500, 400), 90)
    if last == 0:  # single part: the duplicate goes after the first in the same archive
        place(0, Member(member_name(k), second), pos_first)  # same position, planted later: written after
        rejected.append(
            {
                "key": k,
                "archive": archives[0],
                "member": m_first.name,
                "reason": reasons.DUPLICATE_KEY,
                "note": "second copy in the same archive",
            }
        )
    else:
        place(last, Member(member_name(k), second))
        rejected.append(
            {
                "key": k,
                "archive": archives[last],
                "member": member_name(k),
                "reason": reasons.DUPLICATE_KEY,
                "note": f"same key as a member of {archives[0]}",
            }
        )
    rejected[-1]["sha256"] = hashlib.sha256(second).hexdigest()
