"""Decoding: orientation, colour modes, reduced decode, and failures on real hard images (tests/data; the
whole hard-image corpus in the tests marked ``corpus``)."""

from __future__ import annotations

import io
import pickle
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageOps

from pass_wds.decoding import Crop, DecodeError, DecodeOptions, decode_rgb, decode_tensor, open_image

ImageBytes = Callable[[str], bytes]
CORPUS_ONLY = pytest.mark.corpus  # files too large to bundle in tests/data


def _pil_reference(data: bytes) -> np.ndarray:
    """What PIL itself gives: exif_transpose then convert('RGB'), as HxWx3 int."""
    with Image.open(io.BytesIO(data)) as im:
        return np.asarray(ImageOps.exif_transpose(im).convert("RGB")).astype(np.int32)


def _hwc(t: torch.Tensor) -> np.ndarray:
    assert t.dtype == torch.uint8 and t.ndim == 3 and t.shape[0] == 3
    return t.permute(1, 2, 0).numpy().astype(np.int32)


def _all_transposes(x: torch.Tensor) -> list[torch.Tensor]:
    out = []
    for t in (x, x.transpose(1, 2)):
        out += [t, t.flip(1), t.flip(2), t.flip(1, 2)]
    return out


def test_exif_orientations_all_upright_and_equal_shape(image_bytes: ImageBytes) -> None:
    imgs = [decode_tensor(image_bytes(f"sharp__Landscape_{i}.jpg")) for i in range(1, 9)]
    assert {tuple(t.shape) for t in imgs} == {(3, 450, 600)}
    ref = imgs[0].float()
    for i, t in enumerate(imgs[1:], start=2):
        # Same photo (different overlaid digit): upright is much closer to Landscape_1 than any other transpose.
        diffs = [(c.float() - ref).abs().mean().item() for c in _all_transposes(t) if c.shape == ref.shape]
        upright = (t.float() - ref).abs().mean().item()
        assert upright == min(diffs), f"Landscape_{i} is not upright"
        assert upright < 25 < sorted(diffs)[1]
        np.testing.assert_array_equal(_hwc(t), _pil_reference(image_bytes(f"sharp__Landscape_{i}.jpg")))


@pytest.mark.parametrize("orientation", range(1, 9))
def test_crops_are_taken_in_the_upright_frame(image_bytes: ImageBytes, orientation: int) -> None:
    data = image_bytes(f"sharp__Landscape_{orientation}.jpg")
    src = open_image(data)
    assert src.size == (600, 450) and src.orientation == orientation
    ref = _pil_reference(data)
    box = (37, 91, 250, 170)  # left, top, w, h in the upright frame
    exact, resized = src.crops([Crop(box, (170, 250)), Crop(box, (85, 125), flip=True)])
    want = ref[91 : 91 + 170, 37 : 37 + 250]
    np.testing.assert_array_equal(_hwc(exact), want)
    small = torch.nn.functional.interpolate(
        torch.from_numpy(want).permute(2, 0, 1)[None].float(), size=(85, 125), mode="bilinear", antialias=True
    )[0].flip(2)
    assert (resized.float() - small).abs().mean() < 1.0


def test_reduced_jpeg_decode_keeps_output_resolution(image_bytes: ImageBytes) -> None:
    data = image_bytes("cameratrapai__african_elephants.jpg")  # 2048x1536
    src = open_image(data)
    reduced = src.decode_stored(0.2)
    assert reduced.shape[1:] == (384, 512)  # 1/4 DCT scale: the largest reduction still >= 0.2
    assert open_image(data).decode_stored(0.6).shape[1:] == (1536, 2048)  # no 1/2 scale reaches 0.6
    crop = Crop((100, 100, 1600, 1200), (224, 224))
    fast = open_image(data).crops([crop])[0].float()
    full = open_image(data, DecodeOptions(draft=False)).crops([crop])[0].float()
    assert fast.shape == full.shape == (3, 224, 224)
    assert (fast - full).abs().mean() < 4.0


def test_cmyk_matches_pil(image_bytes: ImageBytes) -> None:
    data = image_bytes("pillow__pil_sample_cmyk.jpg")
    assert open_image(data).mode == "CMYK"
    np.testing.assert_array_equal(_hwc(decode_tensor(data)), _pil_reference(data))


@CORPUS_ONLY
def test_cmyk_looks_like_the_rgb_photo(image_bytes: ImageBytes) -> None:
    data = image_bytes("cameratrapai__african_elephants_cmyk.jpg")
    assert open_image(data).mode == "CMYK"
    np.testing.assert_array_equal(_hwc(decode_tensor(data)), _pil_reference(data))
    cmyk = decode_tensor(image_bytes("cameratrapai__african_elephants_cmyk.jpg")).float()
    rgb = decode_tensor(image_bytes("cameratrapai__african_elephants.jpg")).float()
    assert (cmyk - rgb).abs().mean() < 3.0  # the same photo; inverted CMYK would be ~100 off


def test_modes_become_rgb(image_bytes: ImageBytes) -> None:
    gray = decode_tensor(image_bytes("pillow__hopper_gray.jpg"))
    assert gray.shape == (3, 128, 128) and torch.equal(gray[0], gray[1]) and torch.equal(gray[1], gray[2])
    # 16-bit RGB PNG: Pillow reduces it to 8 bits; ours must agree.
    data = image_bytes("ljt__monkey16.png")
    np.testing.assert_array_equal(_hwc(decode_tensor(data)), _pil_reference(data))
    # 16-bit grayscale: full range scaled to 8 bits (value // 257), not clipped at 255 like convert("L").
    data = image_bytes("pillow__16bit.cropped.tif")
    with Image.open(io.BytesIO(data)) as im:
        raw = np.asarray(im).astype(np.int64)
    np.testing.assert_array_equal(_hwc(decode_tensor(data))[:, :, 0], raw // 257)
    # palette without transparency: exactly PIL's conversion
    data = image_bytes("pillow__multipage.tiff")
    np.testing.assert_array_equal(_hwc(decode_tensor(data)), _pil_reference(data))


@pytest.mark.parametrize(
    "name",
    [
        "pillow__transparent.png",
        "pillow__transparent.webp",
        "pillow__p_trns_single.png",
        "pillow__pil123p.png",
    ],
)
def test_transparency_is_composited_on_the_background(image_bytes: ImageBytes, name: str) -> None:
    data = image_bytes(name)
    with Image.open(io.BytesIO(data)) as im:
        rgba = np.asarray(im.convert("RGBA")).astype(np.int64)
    alpha = rgba[:, :, 3:4]
    assert (alpha == 0).any(), "fixture should have transparent pixels"
    for bg in ((255, 255, 255), (0, 128, 255)):
        out = _hwc(decode_tensor(data, DecodeOptions(alpha_background=bg)))
        want = (rgba[:, :, :3] * alpha + np.array(bg) * (255 - alpha) + 127) // 255
        np.testing.assert_array_equal(out, want)
        assert (out[alpha[:, :, 0] == 0] == bg).all()


@pytest.mark.parametrize(
    "name",
    [
        "pillow__hopper_orientation_6.webp",
        pytest.param("pillow__xmp_tags_orientation.png", marks=CORPUS_ONLY),
        pytest.param("pillow__exif_imagemagick_orientation.png", marks=CORPUS_ONLY),
        "pillow__orientation_rectangle.jpg",
        pytest.param("max-resnet__lamp1.jpg", marks=CORPUS_ONLY),
    ],
)
def test_orientation_in_other_containers(image_bytes: ImageBytes, name: str) -> None:
    data = image_bytes(name)
    src = open_image(data)
    assert src.orientation != 1
    out = src.crops([Crop((0, 0, src.width, src.height), (min(src.height, 300), min(src.width, 300)))])[0]
    ref = Image.fromarray(_pil_reference(data).astype(np.uint8)).resize(
        (min(src.width, 300), min(src.height, 300)), Image.Resampling.BILINEAR
    )
    assert (_hwc(out) - np.asarray(ref).astype(np.int32)).__abs__().mean() < 3.0


@pytest.mark.parametrize(
    "name",
    [
        "pillow__truncated_jpeg.jpg",
        pytest.param("cameratrapai__african_elephants_truncated_file.jpg", marks=CORPUS_ONLY),
        "sharp__truncated.jpg",
        "sharp__truncated.png",
        "pillow__truncated_image.png",
        "pillow__truncated_end_chunk.png",
        "pillow__ultrahdr.jpg",
        "sharp__corrupt-header.jpg",
    ],
)
def test_truncated_files_raise(image_bytes: ImageBytes, name: str) -> None:
    data = image_bytes(name)
    for opts in (DecodeOptions(), DecodeOptions(jpeg_backend="pil")):
        with pytest.raises(DecodeError) as info:
            open_image(data, opts).crops([Crop((0, 0, 8, 8), (8, 8))])
        assert info.value.reason == "truncated", str(info.value)


@pytest.mark.parametrize(
    "name",
    [
        "pillow__decompression_bomb.gif",
        pytest.param("sharp__giant-image.jpg", marks=CORPUS_ONLY),
        pytest.param("sharp__65536-uint32-limit.png", marks=CORPUS_ONLY),
    ],
)
def test_bombs_are_refused_from_the_header(image_bytes: ImageBytes, name: str) -> None:
    t0 = time.perf_counter()
    with pytest.raises(DecodeError) as info:
        decode_tensor(image_bytes(name))
    assert info.value.reason == "decompression-bomb"
    assert time.perf_counter() - t0 < 2.0


def test_max_pixels_option_and_other_failures(image_bytes: ImageBytes) -> None:
    data = image_bytes("sklearn__china.jpg")  # 640x427
    with pytest.raises(DecodeError, match="max_pixels=100000") as info:
        open_image(data, DecodeOptions(max_pixels=100_000))
    assert info.value.reason == "decompression-bomb"
    with pytest.raises(DecodeError) as info:
        decode_tensor(b"")
    assert info.value.reason == "empty"
    with pytest.raises(DecodeError) as info:
        decode_tensor(b"this is a text file, not an image")
    assert info.value.reason == "not-an-image"
    with pytest.raises(DecodeError) as info:
        decode_tensor(image_bytes("pillow__png_decompression_dos.png"))
    assert info.value.reason == "corrupt"
    err = pickle.loads(pickle.dumps(DecodeError("truncated", "x")))
    assert isinstance(err, DecodeError) and err.reason == "truncated" and str(err) == "truncated: x"


def test_every_hard_image_decodes_or_raises_decode_error(corpus: Path) -> None:
    outcomes: dict[str, str] = {}
    for path in sorted((corpus / "hard-images").iterdir()):
        try:
            src = open_image(path.read_bytes())
            out = src.crops([Crop((0, 0, src.width, src.height), (min(src.height, 64), min(src.width, 64)))])[
                0
            ]
            assert out.dtype == torch.uint8 and out.shape[0] == 3
            outcomes[path.name] = "ok"
        except DecodeError as e:
            assert e.reason in ("empty", "not-an-image", "decompression-bomb", "truncated", "corrupt")
            outcomes[path.name] = e.reason
    assert outcomes["pillow__avif_hopper.heif"] == "not-an-image"
    assert outcomes["ljt__testimgari.jpg"] == outcomes["sharp__testimgl.jpg"] == "ok"
    assert outcomes["pillow__sugarshack.mpo"] == outcomes["pillow__iss634.webp"] == "ok"
    assert sum(v == "ok" for v in outcomes.values()) >= 50


def test_backends_agree_and_pil_api(image_bytes: ImageBytes) -> None:
    names = ["sklearn__china.jpg", "pillow__flower2.jpg", "img2dataset__208_495.jpg"]
    for name in names:
        data = image_bytes(name)
        tv = decode_tensor(data, DecodeOptions(jpeg_backend="torchvision")).float()
        pil = decode_tensor(data, DecodeOptions(jpeg_backend="pil")).float()
        assert (tv - pil).abs().mean() < 1.0
        img = decode_rgb(data)
        assert img.mode == "RGB" and img.size == (tv.shape[2], tv.shape[1])
    data = image_bytes("sharp__Landscape_6.jpg")
    img = decode_rgb(data)
    assert img.size == (600, 450)
    np.testing.assert_array_equal(np.asarray(img).astype(np.int32), _pil_reference(data))
    small = decode_rgb(image_bytes("cameratrapai__african_elephants.jpg"), draft=(300, 200))
    assert small.size == (512, 384)  # 1/4 scale: smallest DCT scale still >= 300x200
