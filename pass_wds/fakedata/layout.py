"""The PASS release's layout, as the generator writes it: archive and member names, keys, tar members,
and what ``expected.json`` says about an accepted image."""

from __future__ import annotations

import hashlib
import tarfile
from dataclasses import dataclass
from typing import Any

from pass_wds.format import reasons

MEMBER_DIR = "PASS_dataset/dummy_folder"
METADATA_NAME = "pass_metadata.csv"
EXPECTED_NAME = "expected.json"
LISTING_NAME = "listing.csv"
REASONS: tuple[str, ...] = (
    reasons.CORRUPT,
    reasons.EMPTY,
    reasons.NOT_AN_IMAGE,
    reasons.BOMB,
    reasons.MISSING_METADATA,
    reasons.DUPLICATE_KEY,
    reasons.NOT_REGULAR,
    reasons.UNSAFE_PATH,
)
"""The errors.jsonl reasons the bad inputs are planted for (``expected.json`` counts them in this order)."""
TAR_FORMAT = tarfile.GNU_FORMAT


def pass_hash(seed: int, namespace: str, index: int) -> str:
    """A PASS-like key: 32 lowercase hex chars (PASS hashes are YFCC-100M md5s)."""
    return hashlib.md5(f"pass-wds-fake:{seed}:{namespace}:{index}".encode()).hexdigest()


def member_name(key: str) -> str:
    return f"{MEMBER_DIR}/{key}.jpeg"


@dataclass
class Member:
    """One tar member to write: regular file (data) or a special entry (type/linkname)."""

    name: str
    data: bytes = b""
    type: bytes = tarfile.REGTYPE
    linkname: str = ""


def accepted_entry(
    archive: str, member: str, data: bytes, fmt: str, w: int, h: int, mode: str, prog: bool
) -> dict[str, Any]:
    return {
        "archive": archive,
        "member": member,
        "format": fmt,
        "ext": "png" if fmt == "PNG" else "jpg",
        "size": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
        "width": w,
        "height": h,
        "mode": mode,
        "progressive": prog,
    }
