"""pass_wds.imaging: torch-free image facts, the one orientation table, and pixel limits passed per call."""

from __future__ import annotations

import io
import subprocess
import sys
import threading

import numpy as np
import pytest
import torch
from PIL import Image, ImageOps

from pass_wds.decoding import orient_and_flip
from pass_wds.format import reasons
from pass_wds.imaging import (
    STEPS,
    Rejected,
    box_to_stored,
    inspect_image,
    orient_pil,
    read_orientation,
    reencode,
    swaps_axes,
    upright_size,
)


def _stored(orientation: int, w: int = 7, h: int = 4) -> Image.Image:
    """A small non-square image with distinct pixels, tagged with ``orientation``."""
    arr = np.arange(w * h * 3, dtype=np.uint8).reshape(h, w, 3)
    img = Image.fromarray(arr, "RGB")
    exif = img.getexif()
    exif[0x0112] = orientation
    buf = io.BytesIO()
    img.save(buf, "PNG", exif=exif.tobytes())
    out = Image.open(io.BytesIO(buf.getvalue()))
    out.load()
    return out


@pytest.mark.parametrize("orientation", range(1, 9))
def test_one_orientation_table_agrees_with_pillow_in_every_form(orientation: int) -> None:
    img = _stored(orientation)
    assert read_orientation(img) == orientation
    want = np.asarray(ImageOps.exif_transpose(img))  # Pillow's rule is the reference
    assert np.array_equal(np.asarray(orient_pil(img, orientation)), want)
    stored = torch.from_numpy(np.asarray(img).copy()).permute(2, 0, 1)  # CHW
    upright = orient_and_flip(stored, orientation, False)
    assert np.array_equal(upright.permute(1, 2, 0).numpy(), want)
    mirrored = orient_and_flip(stored, orientation, True)
    assert np.array_equal(mirrored.permute(1, 2, 0).numpy(), want[:, ::-1])
    batch = orient_and_flip(stored[None].repeat(2, 1, 1, 1), orientation, True)  # NCHW, as the device path
    assert torch.equal(batch[1], mirrored)
    assert upright_size(img.size, orientation) == (want.shape[1], want.shape[0])
    assert swaps_axes(orientation) == (want.shape[:2] != np.asarray(img).shape[:2])
    # a box in the upright frame, mapped into the stored frame and turned upright, is the same pixels
    width, height = want.shape[1], want.shape[0]
    for box in [(0, 0, width, height), (1, 0, 2, 3), (width - 3, height - 2, 3, 2)]:
        x0, y0, x1, y1 = (int(v) for v in box_to_stored(box, orientation, width, height))
        cut = orient_and_flip(stored[:, y0:y1, x0:x1], orientation, False).permute(1, 2, 0).numpy()
        left, top, w, h = box
        assert np.array_equal(cut, want[top : top + h, left : left + w]), box


def test_unknown_or_unreadable_orientations_are_upright() -> None:
    assert read_orientation(_stored(9)) == 1 and read_orientation(_stored(0)) == 1
    assert not swaps_axes(9) and upright_size((3, 5), 0) == (3, 5)
    assert set(STEPS) == set(range(1, 9))


def test_reencode_turns_every_orientation_upright() -> None:
    for orientation in range(1, 9):
        img = _stored(orientation, 40, 24)
        buf = io.BytesIO()
        img.save(buf, "PNG", exif=img.getexif().tobytes())
        out, w, h = reencode(buf.getvalue(), max_side=None, quality=95)
        assert (w, h) == upright_size((40, 24), orientation)
        assert Image.open(io.BytesIO(out)).size == (w, h)


def test_pixel_limits_are_per_call_under_threads() -> None:
    """Two threads with different limits each get their own verdict, and Pillow's process-wide threshold is
    never touched (it used to be swapped per call: a thread could see another's limit, and the process could
    be left with the wrong one)."""
    buf = io.BytesIO()
    Image.new("RGB", (100, 100)).save(buf, "JPEG")
    data = buf.getvalue()
    before = Image.MAX_IMAGE_PIXELS
    seen: set[int | None] = set()
    wrong: list[int] = []
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            seen.add(Image.MAX_IMAGE_PIXELS)

    def check(limit: int, accepted: bool) -> None:
        for _ in range(300):
            try:
                inspect_image(data, validate=True, max_pixels=limit)
                ok = True
            except Rejected as r:
                assert r.reason == reasons.BOMB and f"limit of {limit} pixels" in r.detail
                ok = False
            if ok != accepted:
                wrong.append(limit)

    watcher = threading.Thread(target=watch)
    watcher.start()
    threads = [threading.Thread(target=check, args=args) for args in ((5000, False), (20_000, True))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    stop.set()
    watcher.join()
    assert not wrong
    assert seen == {before} and Image.MAX_IMAGE_PIXELS == before


def test_imaging_and_decode_options_import_without_torch() -> None:
    code = (
        "import sys, pass_wds.imaging, pass_wds.decoding.options, pass_wds.format.samples\n"
        "bad = sorted(m for m in ('torch', 'torchvision') if m in sys.modules)\n"
        "assert not bad, bad\n"
        "from pass_wds.decoding import DecodeOptions, DecodeError, Crop\n"
        "assert 'torch' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
