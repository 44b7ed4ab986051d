#!/usr/bin/env python3
"""Rebuild the bundled demo dataset ``sample/`` from the shared test corpus (reproducible, byte for byte).

Takes the photos of ``<corpus>/photos`` whose licence clearly allows redistribution (CC0-1.0, public domain,
CC-BY-2.0 with attribution) and that show no person, resizes each to long side <= 500 px (like PASS),
re-encodes it, and packs them in the PASS layout: ``sample/PASS.0.tar`` and ``sample/PASS.1.tar`` with members
``PASS_dataset/dummy_folder/<md5 of the bytes>.jpeg``, plus ``sample/pass_metadata.csv`` (PASS columns;
``unickname`` is the real creator credit) and ``sample/README.md`` (every file, its origin and licence).

Two inputs are deliberately bad so that the demo shows rejection: one truncated JPEG (its row is present) and
one valid image whose hash has no metadata row. One image is stored as PNG bytes under its ``.jpeg`` name,
as a valid input make-shards must keep and write as ``.png``.

  python scripts/build_sample.py [--corpus ../shared/corpus] [--out sample]
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import sys
import tarfile
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageOps

from pass_wds import fakedata

REPO = Path(__file__).resolve().parent.parent
MTIME = 1_632_000_000  # fixed member mtime (2021-09-18, the month PASS was released)
COLUMNS = (*fakedata.COLUMNS, "origin")  # PASS's metadata columns (as the generator writes them) + provenance
SKIMAGE = "https://pypi.org/project/scikit-image/0.25.2/"
SKLEARN = "https://pypi.org/project/scikit-learn/1.7.2/"


def _gh(repo: str, commit: str) -> str:
    return f"https://github.com/{repo}/tree/{commit}"


MAX = {
    "max-incres": ("IBM/MAX-Inception-ResNet-v2", "a23c1f6ee543feefc0df1959c02f07cc44fd0999", "Pexels"),
    "max-scene": ("IBM/MAX-Scene-Classifier", "7c5d12a0834787909fdbab16f13ebe5eb69ccb31", "Pexels"),
    "max-srenh": ("IBM/MAX-Image-Resolution-Enhancer", "8485fabcf16a8877a267eb3f4575da16832ce867", "Pexels"),
    "max-resnet": ("IBM/MAX-ResNet-50", "643dbe4064870461c20fb35da49e86ec6734d37c", "Pexels"),
    "max-caption": ("IBM/MAX-Image-Caption-Generator", "a2286854a6d8bc2d3de8d698f44fdf835e24d110", "Pexels"),
    "max-color": ("IBM/MAX-Image-Colorizer", "8a14212e8dbc445c20a1608d3e6a394644b2840c", "Pexels"),
    "max-style": ("IBM/MAX-Fast-Neural-Style-Transfer", "be6db0596d96c43bf971226e66479ef3fb55ec54", "Pexels"),
    "max-segweb": ("IBM/MAX-Image-Segmenter-Web-App", "21b9def7796a37b55b769ee212c0196b8aa1df4a", "Pixabay"),
    "max-objdet": (
        "IBM/MAX-Object-Detector",
        "7302bae74d4fdc33da24cd5e180b308d364bfd75",
        "the MAX-Object-Detector authors",
    ),
}


@dataclass(frozen=True)
class Photo:
    file: str  # name in <corpus>/photos
    creator: str
    license: str
    url: str
    origin: str  # path inside the origin
    subject: str


def _max(file: str, path: str, subject: str) -> Photo:
    tag = file.split("__")[0]
    repo, commit, who = MAX[tag]
    creator = f"{who} contributor (via {repo})" if who in ("Pexels", "Pixabay") else f"{who} ({repo})"
    return Photo(file, creator, "CC0-1.0", _gh(repo, commit), f"{repo}: {path}", subject)


# Only CC0 / public domain / CC-BY with a named creator; nothing marked as showing people (SOURCES.md).
PHOTOS: tuple[Photo, ...] = (
    Photo(
        "sklearn__china.jpg",
        "danielbuechele (Flickr)",
        "CC-BY-2.0",
        SKLEARN,
        "scikit-learn 1.7.2: sklearn/datasets/images/china.jpg",
        "Summer Palace pagoda",
    ),
    Photo(
        "skimage__rocket.jpg",
        "SpaceX",
        "public-domain",
        SKIMAGE,
        "scikit-image 0.25.2: skimage/data/rocket.jpg",
        "Falcon 9 launch",
    ),
    Photo(
        "skimage__hubble_deep_field.jpg",
        "NASA",
        "public-domain",
        SKIMAGE,
        "scikit-image 0.25.2: skimage/data/hubble_deep_field.jpg",
        "Hubble eXtreme Deep Field",
    ),
    Photo(
        "skimage__chelsea.png",
        "Stefan van der Walt",
        "CC0-1.0",
        SKIMAGE,
        "scikit-image 0.25.2: skimage/data/chelsea.png",
        "cat",
    ),
    Photo(
        "skimage__coffee.png",
        "Rachel Michetti",
        "CC0-1.0",
        SKIMAGE,
        "scikit-image 0.25.2: skimage/data/coffee.png",
        "coffee cup",
    ),
    Photo(
        "skimage__brick.png",
        "CC0Textures (Bricks25)",
        "CC0-1.0",
        SKIMAGE,
        "scikit-image 0.25.2: skimage/data/brick.png",
        "brick wall, grayscale",
    ),
    Photo(
        "skimage__grass.png",
        "linolafett (DeviantArt)",
        "CC0-1.0",
        SKIMAGE,
        "scikit-image 0.25.2: skimage/data/grass.png",
        "grass, grayscale",
    ),
    Photo(
        "skimage__gravel.png",
        "CC0Textures (Gravel04)",
        "CC0-1.0",
        SKIMAGE,
        "scikit-image 0.25.2: skimage/data/gravel.png",
        "gravel, grayscale",
    ),
    Photo(
        "skimage__clock_motion.png",
        "Stefan van der Walt",
        "public-domain",
        SKIMAGE,
        "scikit-image 0.25.2: skimage/data/clock_motion.png",
        "motion-blurred clock, grayscale",
    ),
    _max("max-incres__cat.jpg", "samples/cat.jpg", "cat"),
    _max("max-incres__dog.jpg", "samples/dog.jpg", "beagle"),
    _max("max-incres__pizza.jpg", "samples/pizza.jpg", "pizza"),
    _max("max-incres__shuttle.jpg", "samples/shuttle.jpg", "space shuttle launch"),
    _max("max-scene__city.jpg", "samples/city.jpg", "city skyline"),
    _max("max-scene__ruins.jpg", "samples/ruins.jpg", "Odeon of Herodes Atticus"),
    _max("max-srenh__airplane.png", "samples/test_examples/low_resolution/airplane.png", "biplane"),
    _max("max-srenh__elephant.png", "samples/test_examples/low_resolution/elephant.png", "elephant"),
    _max("max-srenh__food.png", "samples/test_examples/low_resolution/food.png", "burrito (small image)"),
    _max("max-srenh__palm_tree.png", "samples/test_examples/low_resolution/palm_tree.png", "palm tree"),
    _max("max-srenh__penguin.png", "samples/test_examples/low_resolution/penguin.png", "penguin"),
    _max("max-resnet__burger.jpg", "samples/burger.jpg", "burger and fries"),
    _max("max-resnet__coffee.jpg", "samples/coffee.jpg", "latte"),
    _max("max-caption__plane.jpg", "samples/plane.jpg", "airliner in clouds"),
    _max(
        "max-color__bw-cherry-blossoms.jpg",
        "samples/bw-cherry-blossoms.jpg",
        "cherry blossoms, black and white",
    ),
    _max("max-color__bw-city.jpg", "samples/bw-city.jpg", "city, black and white"),
    _max("max-style__beach-city.jpg", "samples/beach-city.jpg", "beach and skyline"),
    _max("max-style__bridge.jpg", "samples/bridge.jpg", "Golden Gate bridge in fog"),
    _max("max-style__columns.jpg", "samples/columns.jpg", "colonnade"),
    _max("max-style__flowers.jpg", "samples/flowers.jpg", "wild flowers"),
    _max("max-segweb__airplane.jpg", "assets/airplane.jpg", "airliner"),
    _max("max-segweb__aurora_borealis.jpg", "assets/aurora borealis.jpg", "aurora over a lake"),
    _max("max-segweb__cow.jpg", "assets/cow.jpg", "cow in fog"),
    _max("max-segweb__milky_way.jpg", "assets/milky way.jpg", "night sky"),
    _max("max-segweb__outer_space.jpg", "assets/outer space.jpg", "nebula"),
    _max("max-segweb__sportscar.jpg", "assets/sportscar.jpg", "sports car"),
    _max("max-segweb__terrace.jpg", "assets/terrace.jpg", "cafe terrace chairs"),
    _max("max-segweb__train.jpg", "assets/train.jpg", "diesel locomotive in snow"),
    _max("max-objdet__a-pen-i-am.jpg", "samples/a-pen-i-am.jpg", "pen on paper"),
)
GRAYSCALE = {"skimage__brick.png", "skimage__grass.png", "skimage__gravel.png", "skimage__clock_motion.png"}
AS_PNG = "skimage__chelsea.png"  # kept as PNG bytes under a .jpeg name (valid; must come out as .png)
TRUNCATED = "max-style__bridge.jpg"  # JPEG cut short (row present): rejected as corrupt
NO_METADATA = "max-segweb__train.jpg"  # valid JPEG with no metadata row: rejected as missing-metadata


def encode(photo: Photo, corpus: Path, index: int) -> tuple[bytes, str]:
    """Resized, re-encoded bytes and a short format description."""
    with Image.open(corpus / "photos" / photo.file) as src:
        img = ImageOps.exif_transpose(src)
        img = img.convert("L" if photo.file in GRAYSCALE else "RGB")
    scale = min(1.0, 500 / max(img.size))
    if scale < 1.0:
        img = img.resize((round(img.width * scale), round(img.height * scale)), Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    if photo.file == AS_PNG:
        img.save(buf, "PNG", compress_level=9)
        return buf.getvalue(), f"PNG {img.mode} {img.width}x{img.height}"
    progressive = index % 4 == 1
    img.save(buf, "JPEG", quality=88, progressive=progressive)
    kind = " progressive" if progressive else ""
    return buf.getvalue(), f"JPEG {img.mode} {img.width}x{img.height}{kind}"


def write_tar(path: Path, members: list[tuple[str, bytes]]) -> None:
    with tarfile.open(path, "w", format=tarfile.GNU_FORMAT) as tf:
        for name, data in members:
            ti = tarfile.TarInfo(name)
            ti.size, ti.mtime, ti.mode = len(data), MTIME, 0o644
            ti.uid = ti.gid = 1000
            ti.uname = ti.gname = "pass"
            tf.addfile(ti, io.BytesIO(data))


def build(corpus: Path, out: Path) -> list[dict[str, str]]:
    missing = [p.file for p in PHOTOS if not (corpus / "photos" / p.file).is_file()]
    if missing:
        raise FileNotFoundError(f"not in {corpus}/photos: {', '.join(missing)}")
    out.mkdir(parents=True, exist_ok=True)
    entries: list[dict[str, str]] = []
    parts: list[list[tuple[str, bytes]]] = [[], []]
    rows: list[dict[str, str]] = []
    for i, photo in enumerate(PHOTOS):
        data, desc = encode(photo, corpus, i)
        role = "kept"
        if photo.file == TRUNCATED:
            data, desc, role = (
                data[: len(data) * 3 // 5],
                desc + ", truncated to 60 %",
                "rejected: corrupt (truncated JPEG)",
            )
        elif photo.file == NO_METADATA:
            role = "rejected: missing-metadata (no row in pass_metadata.csv)"
        elif photo.file == AS_PNG:
            role = "kept, written as .png (PNG bytes under a .jpeg name)"
        key = hashlib.md5(data).hexdigest()
        part = i % 2
        archive = f"PASS.{part}.tar"
        parts[part].append((f"PASS_dataset/dummy_folder/{key}.jpeg", data))
        if photo.file != NO_METADATA:
            rows.append(
                {
                    "hash": key,
                    "unickname": photo.creator,
                    "datetaken": "",
                    "dateuploaded": "",
                    "latitude": "",
                    "longitude": "",
                    "photoid": "",
                    "license": photo.license,
                    "url": photo.url,
                    "origin": photo.origin,
                }
            )
        entries.append(
            {
                "key": key,
                "archive": archive,
                "bytes": str(len(data)),
                "format": desc,
                "role": role,
                "photo": photo.file,
            }
        )
    for p, members in enumerate(parts):
        write_tar(out / f"PASS.{p}.tar", members)
    rows.sort(key=lambda r: r["hash"])
    with open(out / "pass_metadata.csv", "w", encoding="utf-8", newline="") as f:
        w = csv.DictWriter(f, fieldnames=COLUMNS, lineterminator="\n")
        w.writeheader()
        w.writerows(rows)
    write_readme(out, entries)
    return entries


def write_readme(out: Path, entries: list[dict[str, str]]) -> None:
    by_file = {p.file: p for p in PHOTOS}
    sizes = {n: (out / n).stat().st_size for n in ("PASS.0.tar", "PASS.1.tar", "pass_metadata.csv")}
    lines = [
        "# Bundled demo dataset (PASS layout)",
        "",
        "A tiny stand-in for PASS so that `make demo` (`make-shards --config configs/sample.yaml`) runs with no",
        "download. Built by `scripts/build_sample.py` from `../shared/corpus/photos` (rerun it to reproduce these",
        "files byte for byte). Every image was resized to long side <= 500 px and re-encoded (JPEG quality 88,",
        "every fourth one progressive, four grayscale); these are changes to the originals.",
        "",
        "## Files",
        "",
        "| file | bytes | content |",
        "|---|---:|---|",
        f"| `PASS.0.tar` | {sizes['PASS.0.tar']:,} | {sum(e['archive'] == 'PASS.0.tar' for e in entries)} members `PASS_dataset/dummy_folder/<hash>.jpeg` |",
        f"| `PASS.1.tar` | {sizes['PASS.1.tar']:,} | {sum(e['archive'] == 'PASS.1.tar' for e in entries)} members `PASS_dataset/dummy_folder/<hash>.jpeg` |",
        f"| `pass_metadata.csv` | {sizes['pass_metadata.csv']:,} | one row per image except the one below marked missing-metadata; "
        "PASS columns (`hash`, `unickname` = creator credit, `datetaken`, `dateuploaded`, `latitude`, `longitude`, "
        "`photoid` are empty: unknown) plus `license`, `url` (the origin project) and `origin` (path in it) |",
        "| `README.md` | | this file |",
        "",
        "`hash` is the md5 of the stored bytes, 32 lowercase hex characters like PASS's hashes.",
        "",
        "## Deliberate bad inputs (the demo must reject them and keep everything else)",
        "",
    ]
    for e in entries:
        if e["role"].startswith("rejected"):
            lines.append(f"- `{e['key']}` in `{e['archive']}` ({e['photo']}): {e['role']}")
    lines += [
        "",
        "Expected result: "
        f"{sum(not e['role'].startswith('rejected') for e in entries)} samples written, 2 rejected "
        "(`corrupt`, `missing-metadata`); the PNG one is written as `<hash>.png`.",
        "",
        "## Images, origin and licence",
        "",
        "Creative Commons and CC0 terms: CC-BY-2.0 https://creativecommons.org/licenses/by/2.0/ (attribution: the",
        "creator below; changes: resized and re-encoded), CC0-1.0 https://creativecommons.org/publicdomain/zero/1.0/.",
        "Licences and credits are as stated by the origin (see `../shared/corpus/SOURCES.md`). No image shows a person.",
        "",
        "| hash | archive | stored as | creator | licence | origin | subject | role |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for e in entries:
        p = by_file[e["photo"]]
        lines.append(
            f"| `{e['key']}` | {e['archive']} | {e['format']}, {int(e['bytes']):,} B | {p.creator} | {p.license} | "
            f"[{p.origin}]({p.url}) | {p.subject} | {e['role']} |"
        )
    (out / "README.md").write_text("\n".join(lines) + "\n", encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--corpus", default=str(REPO.parent / "shared" / "corpus"), help="the shared corpus folder"
    )
    ap.add_argument("--out", default=str(REPO / "sample"), help="output folder (default: sample/)")
    a = ap.parse_args(argv)
    try:
        entries = build(Path(a.corpus), Path(a.out))
    except (OSError, ValueError) as e:
        print(f"build_sample: {e}", file=sys.stderr)
        return 2
    total = sum(int(e["bytes"]) for e in entries)
    print(f"wrote {len(entries)} images ({total / 1e6:.2f} MB of image bytes) to {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
