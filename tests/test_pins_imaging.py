"""Behaviour pins (issue 17, item 5): what the decoder and the shard writer make of each test image, for fixed
inputs and options, must not change when the image code moves into ``pass_wds.imaging``.

Pinned per image: the decoder's header facts (format, mode, orientation, upright and stored size, plain-JPEG
flag), the sha256 of the full upright pixels (default backend and Pillow), of exact-size crops with and
without a flip (which exercise the upright → stored box mapping and the orientation of the output), of a
DCT-reduced decode, of ``decode_rgb``, or the reason and message of the failure; and the writer's verdict
(format, extension and size, or the rejection reason and detail) with and without validation, with a low
pixel limit, and the sha256 of the re-encoded bytes. Only exact operations are hashed (decoding with
libjpeg-turbo's accurate IDCT, Pillow's conversions, crops, transposes; Pillow's LANCZOS and JPEG encoder for
re-encoding): no float resize whose rounding might differ between CPUs.

Changing a pin is a behaviour change, never a refactoring: say why in the commit. Rerun with
``PASS_WDS_PRINT_PINS=1`` to print the current values.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any

import torch

from pass_wds.decoding import Crop, DecodeError, DecodeOptions, decode_rgb, open_image
from pass_wds.writing import Rejected, inspect_image, reencode

PRINT = os.environ.get("PASS_WDS_PRINT_PINS") == "1"


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]


def _px(t: torch.Tensor) -> str:
    assert t.dtype == torch.uint8 and t.ndim == 3 and t.shape[0] == 3
    return f"{tuple(t.shape)}:{_sha(t.contiguous().numpy().tobytes())}"


def _attempt(fn: Any) -> Any:
    try:
        return fn()
    except DecodeError as e:
        return f"DecodeError {e.reason}: {e.detail}"
    except Rejected as r:
        return f"Rejected {r.reason}: {r.detail}"


def _decoder_facts(data: bytes) -> dict[str, Any]:
    facts: dict[str, Any] = {}
    for name, opts in (("default", DecodeOptions()), ("pil", DecodeOptions(jpeg_backend="pil"))):
        try:
            src = open_image(data, opts)
        except DecodeError as e:
            facts[name] = f"DecodeError {e.reason}: {e.detail}"
            continue
        facts[f"{name}.header"] = [
            src.format,
            src.mode,
            src.orientation,
            list(src.size),
            list(src.stored_size),
            src.plain_jpeg,
        ]
        facts[f"{name}.full"] = _attempt(lambda src=src: _px(src.full()))
        w, h = src.width, src.height
        box = (w // 7, h // 5, max(1, w // 2), max(1, h // 3))
        crops = [Crop(box, (box[3], box[2])), Crop(box, (box[3], box[2]), flip=True)]
        facts[f"{name}.crops"] = _attempt(
            lambda data=data, opts=opts, crops=crops: [_px(c) for c in open_image(data, opts).crops(crops)]
        )
        facts[f"{name}.reduced"] = _attempt(
            lambda data=data, opts=opts: _px(open_image(data, opts).decode_stored(0.3))
        )
    facts["decode_rgb"] = _attempt(lambda: _sha(decode_rgb(data).tobytes()))
    facts["decode_rgb.draft"] = _attempt(lambda: _sha(decode_rgb(data, draft=(64, 48)).tobytes()))
    facts["small_limit"] = _attempt(lambda: open_image(data, DecodeOptions(max_pixels=40_000)).size)
    return facts


def _writer_facts(data: bytes) -> dict[str, Any]:
    facts: dict[str, Any] = {}
    for validate in (True, False):
        for limit in (89_478_485, 40_000):
            for reenc in (False, True):
                info = _attempt(
                    lambda v=validate, lim=limit, r=reenc: inspect_image(
                        data, validate=v, max_pixels=lim, reencode=r
                    )
                )
                facts[f"inspect.{validate}.{limit}.{reenc}"] = (
                    info if isinstance(info, str) else [info.format, info.ext, info.width, info.height]
                )

    def _reencoded() -> Any:
        out, w, h = reencode(data, max_side=96, quality=90)
        return [_sha(out), w, h]

    try:
        facts["reencode"] = _reencoded()
    except Exception as e:  # reencode itself lets the decoder's error through; the writer classifies it
        facts["reencode"] = type(e).__name__
    return facts


def _pins(root: Path) -> dict[str, str]:
    got = {}
    for folder in ("hard-images", "photos"):
        for path in sorted((root / folder).iterdir()):
            data = path.read_bytes()
            facts = {"decoder": _decoder_facts(data), "writer": _writer_facts(data)}
            text = re.sub(r" at 0x[0-9a-f]+", " at 0x...", json.dumps(facts, sort_keys=True, default=str))
            got[path.name] = _sha(text.encode())  # (no object addresses: Pillow names the BytesIO it read)
            if PRINT:
                print(f"FACTS {path.name}: {text}")
    return got


def _check(got: dict[str, str], want: dict[str, str]) -> None:
    if PRINT:
        print("PINS", json.dumps(got, indent=4, sort_keys=True))
    changed = sorted(k for k in want if got.get(k) != want[k])
    assert set(got) >= set(want), f"images missing: {sorted(set(want) - set(got))}"
    assert not changed, f"what the decoder or the writer makes of these images changed: {changed}"


def test_bundled_images_decode_and_write_as_pinned() -> None:
    from conftest import DATA

    _check(_pins(DATA), BUNDLED)


def test_corpus_images_decode_and_write_as_pinned(corpus: Path) -> None:
    _check(_pins(corpus), CORPUS)


BUNDLED: dict[str, str] = {
    "cameratrapai__african_elephants.jpg": "4caf3753826ecf17",
    "exifsamples__Canon_40D.jpg": "f3cb085c3695b87c",
    "exifsamples__Nikon_D70.jpg": "e1c30f521340baa4",
    "exifsamples__Olympus_C8080WZ.jpg": "ce43fa6d4f3b3269",
    "exifsamples__Sony_HDR-HC3.jpg": "2341e24ffe6a8c73",
    "gradio__cheetah1.jpg": "e4408e46e27e983b",
    "gradio__lion.jpg": "51bd58559d48a46e",
    "img2dataset__123_456.jpg": "9fd74339f21bdea2",
    "img2dataset__208_495.jpg": "37ba4d235e02c136",
    "img2dataset__321_421.jpg": "f7fee336aa52c45b",
    "img2dataset__389_535.jpg": "af76e26efa2c4b03",
    "img2dataset__416_264.jpg": "fa3946c3cd3cb355",
    "img2dataset__456_123.jpg": "bbedc8e59f0c1c98",
    "img2dataset__524_316.jpg": "b44b65751360a845",
    "ljt__monkey16.png": "64b4a293fe481cac",
    "ljt__testimgari.jpg": "ed5be12e0adc03f4",
    "ljt__testorig.jpg": "d9b5f1215791f455",
    "max-srenh__food.png": "2af5bed0748f76be",
    "pillow__16bit.cropped.tif": "87567ae217808124",
    "pillow__avif_hopper.heif": "e514011e88cce8da",
    "pillow__decompression_bomb.gif": "cabf9ab82e3cdc92",
    "pillow__flower2.jpg": "3f4d9ef8fa480da2",
    "pillow__hopper_gray.jpg": "40b5664646badc86",
    "pillow__hopper_orientation_6.webp": "536bb63225587908",
    "pillow__multipage.tiff": "4d39d2de9f24a4dd",
    "pillow__orientation_rectangle.jpg": "b82054c15402e8ba",
    "pillow__p_trns_single.png": "217074312a889212",
    "pillow__pil123p.png": "d926da432902a3fe",
    "pillow__pil_sample_cmyk.jpg": "3e47a8ff11dbce12",
    "pillow__png_decompression_dos.png": "12259c05fae7c245",
    "pillow__transparent.png": "fe9e5a1924cc90dc",
    "pillow__transparent.webp": "7fa199ab84d89abf",
    "pillow__truncated_end_chunk.png": "69e2475fc4ecbb62",
    "pillow__truncated_image.png": "795a385feae8c17f",
    "pillow__truncated_jpeg.jpg": "aec698ffeceed86c",
    "pillow__ultrahdr.jpg": "66507861636e1c3a",
    "sharp__Landscape_1.jpg": "a6b290c1d5cbecca",
    "sharp__Landscape_2.jpg": "4542c00871154330",
    "sharp__Landscape_3.jpg": "e74bcdd771b79944",
    "sharp__Landscape_4.jpg": "ef52479ef9efa1db",
    "sharp__Landscape_5.jpg": "dca82de9d1e085da",
    "sharp__Landscape_6.jpg": "adb0bab27af28502",
    "sharp__Landscape_7.jpg": "4e4de71a4689cc61",
    "sharp__Landscape_8.jpg": "158bafb0f660aeb3",
    "sharp__corrupt-header.jpg": "9862fe8b7d89cb65",
    "sharp__truncated.jpg": "9c4ad159eac053a9",
    "sharp__truncated.png": "d730aaf71f8db0d8",
    "sklearn__china.jpg": "ec37439e3b6d2c5e",
}
CORPUS: dict[str, str] = {
    "cameratrapai__african_elephants.jpg": "4caf3753826ecf17",
    "cameratrapai__african_elephants_cmyk.jpg": "44f173039934a18a",
    "cameratrapai__african_elephants_truncated_file.jpg": "a67a9d046b710e9e",
    "cameratrapai__american_black_bear.jpg": "c5b5405235b0a632",
    "cameratrapai__blank.jpg": "9f51e782f03fa632",
    "cameratrapai__blank2.jpg": "5d15e0055e61a5dd",
    "cameratrapai__blank3.jpg": "76356931afd56456",
    "cameratrapai__domestic_cattle.jpg": "24493ad3d3a79486",
    "cameratrapai__domestic_dog.jpg": "9e4ab3914c0d5dbe",
    "cameratrapai__ocelot.jpg": "75389f11deb5151a",
    "cameratrapai__vehicle.jpg": "929e0cae72bcbc95",
    "exifsamples__Canon_40D.jpg": "f3cb085c3695b87c",
    "exifsamples__Canon_40D_photoshop_import.jpg": "2c6ab7107555548c",
    "exifsamples__Canon_DIGITAL_IXUS_400.jpg": "10057caf174990c8",
    "exifsamples__Fujifilm_FinePix6900ZOOM.jpg": "72ed3be7026ec980",
    "exifsamples__Fujifilm_FinePix_E500.jpg": "ecbe82b275738fa9",
    "exifsamples__Kodak_CX7530.jpg": "e030fb4b9d4bbfde",
    "exifsamples__Nikon_COOLPIX_P1.jpg": "e81578fb0f3b5685",
    "exifsamples__Nikon_D70.jpg": "e1c30f521340baa4",
    "exifsamples__Olympus_C8080WZ.jpg": "ce43fa6d4f3b3269",
    "exifsamples__Panasonic_DMC-FZ30.jpg": "8a761e19a487a94b",
    "exifsamples__Pentax_K10D.jpg": "852c8c3becfc3bda",
    "exifsamples__Ricoh_Caplio_RR330.jpg": "d5eca4d947624d57",
    "exifsamples__Samsung_Digimax_i50_MP3.jpg": "eb14f071829de88f",
    "exifsamples__Sony_HDR-HC3.jpg": "2341e24ffe6a8c73",
    "exifsamples__WWL_(Polaroid)_ION230.jpg": "8feea66d461fbe26",
    "gradio__cheetah.jpg": "6494952713c53a96",
    "gradio__cheetah1.jpg": "e4408e46e27e983b",
    "gradio__lion.jpg": "51bd58559d48a46e",
    "gradio__tower.jpg": "3d576e0130b3df53",
    "img2dataset__123_456.jpg": "9fd74339f21bdea2",
    "img2dataset__208_495.jpg": "37ba4d235e02c136",
    "img2dataset__321_421.jpg": "f7fee336aa52c45b",
    "img2dataset__389_535.jpg": "af76e26efa2c4b03",
    "img2dataset__416_264.jpg": "fa3946c3cd3cb355",
    "img2dataset__456_123.jpg": "bbedc8e59f0c1c98",
    "img2dataset__524_316.jpg": "b44b65751360a845",
    "imgaug__quokka.jpg": "a311731bdc392d67",
    "ljt__monkey12.jpg": "e514011e88cce8da",
    "ljt__monkey16.png": "64b4a293fe481cac",
    "ljt__testimgari.jpg": "ed5be12e0adc03f4",
    "ljt__testorig.jpg": "d9b5f1215791f455",
    "max-caption__plane.jpg": "552f0a8f20dcc379",
    "max-color__bw-cherry-blossoms.jpg": "0075877c986a77fe",
    "max-color__bw-city.jpg": "9a785c1317fd8420",
    "max-incres__cat.jpg": "b42937c74ac85628",
    "max-incres__dog.jpg": "e3e3d0f430bc67fd",
    "max-incres__pizza.jpg": "919c3b69a32a09c8",
    "max-incres__shuttle.jpg": "52e2964ddb1403c8",
    "max-objdet__a-pen-i-am.jpg": "9d05061d19193724",
    "max-resnet__burger.jpg": "0818e145b0a1ec51",
    "max-resnet__coffee.jpg": "01db99afb43741bf",
    "max-resnet__lamp1.jpg": "9497988c43311c95",
    "max-resnet__taxis.jpg": "132f33038b655328",
    "max-scene__bakery.jpg": "55e5e0c4117826a5",
    "max-scene__city.jpg": "21baad59e2ffd5ef",
    "max-scene__paris.jpg": "9321d1b45bc0d5f5",
    "max-scene__ruins.jpg": "2462b441ee1b98a9",
    "max-segweb__airplane.jpg": "b1cda4b5c3db4062",
    "max-segweb__aurora_borealis.jpg": "e1f2ebf3c65945da",
    "max-segweb__cow.jpg": "a74df91061f725c1",
    "max-segweb__milky_way.jpg": "b40744be8940a785",
    "max-segweb__outer_space.jpg": "3b841eb9fad7c792",
    "max-segweb__sportscar.jpg": "06bbe8ae6f8f03e8",
    "max-segweb__terrace.jpg": "58081f9e5fa12d18",
    "max-segweb__train.jpg": "7cc5974e0326dbd2",
    "max-srenh__airplane.png": "a03782e85ef78d60",
    "max-srenh__elephant.png": "562c937aec99cba8",
    "max-srenh__food.png": "2af5bed0748f76be",
    "max-srenh__palm_tree.png": "8222df191e8ea15f",
    "max-srenh__penguin.png": "27f9b920defde55a",
    "max-style__beach-city.jpg": "e6ba8bff847e9b0d",
    "max-style__bridge.jpg": "7d77f75965a830f3",
    "max-style__columns.jpg": "9ac62d2699d59a74",
    "max-style__flowers.jpg": "2bf199538048ca7d",
    "nolmoonen__012mp-bus.jpg": "11d6e84d095a61fd",
    "pillow__16bit.cropped.tif": "87567ae217808124",
    "pillow__apng_mode_16bit.png": "7e49a2c4657e5d1f",
    "pillow__app13-multiple.jpg": "4b6adaa98dd17555",
    "pillow__avif_hopper.heif": "e514011e88cce8da",
    "pillow__avif_star.avifs": "36ede611dbec98a7",
    "pillow__broken.png": "e514011e88cce8da",
    "pillow__broken_data_stream.png": "6de60510925f5dc0",
    "pillow__crash-0c7e0e8e11ce787078f00b5b0ca409a167f070e0.tif": "62a833180ce671cf",
    "pillow__decompression_bomb.gif": "cabf9ab82e3cdc92",
    "pillow__decompression_bomb_extents.gif": "ebc60269e90603cb",
    "pillow__dispose_bgnd.gif": "3cc92ef7f85cfe97",
    "pillow__empty_gps_ifd.jpg": "e911a9415e279916",
    "pillow__exif-dpi-zerodivision.jpg": "db102090f4a62f04",
    "pillow__exif-ifd-offset.jpg": "db102090f4a62f04",
    "pillow__exif_gps_typeerror.jpg": "393144032892134a",
    "pillow__exif_imagemagick_orientation.png": "ba1fe06bd22d9ee4",
    "pillow__flower.jpg": "af5cad267e224f00",
    "pillow__flower2.jpg": "3f4d9ef8fa480da2",
    "pillow__hopper_16bit_qtables.jpg": "1795c246cdce3944",
    "pillow__hopper_bad_exif.jpg": "ab39a3d4cddbf03b",
    "pillow__hopper_gray.jpg": "40b5664646badc86",
    "pillow__hopper_orientation_6.webp": "536bb63225587908",
    "pillow__i_trns.png": "8b819fa6af04992d",
    "pillow__icc-after-SOF.jpg": "a58751adc4453748",
    "pillow__icc_profile_big.jpg": "a23d23eb7b7b001b",
    "pillow__invalid-exif-without-x-resolution.jpg": "d7e52c563614517a",
    "pillow__invalid-exif.jpg": "db102090f4a62f04",
    "pillow__iss634.webp": "ca1ca2bdad5849ac",
    "pillow__jpeg_ff00_header.jpg": "3f4d9ef8fa480da2",
    "pillow__junk_jpeg_header.jpg": "730f4c27f36e3971",
    "pillow__multipage.tiff": "4d39d2de9f24a4dd",
    "pillow__multiple_exif.jpg": "d4ef8c6b134cb034",
    "pillow__oom-225817ca0f8c663be7ab4b9e717b02c661e66834.tif": "e514011e88cce8da",
    "pillow__orientation_rectangle.jpg": "b82054c15402e8ba",
    "pillow__p_trns_single.png": "217074312a889212",
    "pillow__photoshop-200dpi-broken.jpg": "3564f78c0fdb4a87",
    "pillow__pil123p.png": "d926da432902a3fe",
    "pillow__pil_sample_cmyk.jpg": "3e47a8ff11dbce12",
    "pillow__png_decompression_dos.png": "12259c05fae7c245",
    "pillow__sugarshack.mpo": "992d995ade56a6ad",
    "pillow__sugarshack_bad_mpo_header.jpg": "f536638498704950",
    "pillow__sugarshack_no_data.mpo": "992d995ade56a6ad",
    "pillow__tRNS_null_1x1.png": "ab03f09a2bc8249d",
    "pillow__tiff_strip_cmyk_jpeg.tif": "022041c3c592274a",
    "pillow__transparent.gif": "29da620631e8adcd",
    "pillow__transparent.png": "fe9e5a1924cc90dc",
    "pillow__transparent.webp": "7fa199ab84d89abf",
    "pillow__truncated_app14.jpg": "496d9fe8bb7a08f7",
    "pillow__truncated_end_chunk.png": "69e2475fc4ecbb62",
    "pillow__truncated_image.png": "795a385feae8c17f",
    "pillow__truncated_jpeg.jpg": "aec698ffeceed86c",
    "pillow__ultrahdr.jpg": "66507861636e1c3a",
    "pillow__unknown_compression_method.png": "e514011e88cce8da",
    "pillow__xmp_tags_orientation.png": "21e3b9473b87f7e3",
    "pillow__zero_width.gif": "655cac555d19d0b2",
    "sharp__65536-uint32-limit.png": "b6e4f64fcea5bd77",
    "sharp__Landscape_1.jpg": "a6b290c1d5cbecca",
    "sharp__Landscape_2.jpg": "4542c00871154330",
    "sharp__Landscape_3.jpg": "e74bcdd771b79944",
    "sharp__Landscape_4.jpg": "ef52479ef9efa1db",
    "sharp__Landscape_5.jpg": "dca82de9d1e085da",
    "sharp__Landscape_6.jpg": "adb0bab27af28502",
    "sharp__Landscape_7.jpg": "4e4de71a4689cc61",
    "sharp__Landscape_8.jpg": "158bafb0f660aeb3",
    "sharp__bggn4a16.png": "e59bca0824afa9e5",
    "sharp__corrupt-header.jpg": "9862fe8b7d89cb65",
    "sharp__giant-image.jpg": "73ffce46993c9e31",
    "sharp__p3.png": "c3717eb1717ec469",
    "sharp__relax.jp2": "d7cc4291d244fb20",
    "sharp__tbgn2c16.png": "30b83f62e33bba86",
    "sharp__testimgl.jpg": "d977f962b181f61b",
    "sharp__truncated.jpg": "9c4ad159eac053a9",
    "sharp__truncated.png": "d730aaf71f8db0d8",
    "skimage__brick.png": "29a421351811a290",
    "skimage__chelsea.png": "0acb846ea5440665",
    "skimage__clock_motion.png": "041324d82c8b6c42",
    "skimage__coffee.png": "aed78643e0c0546c",
    "skimage__coins.png": "eea3d024ef564e44",
    "skimage__grass.png": "7a7221fa91cf55a6",
    "skimage__gravel.png": "30cb14e6b5509536",
    "skimage__hubble_deep_field.jpg": "c499ab21e75e053c",
    "skimage__moon.png": "721b07fd1ed359da",
    "skimage__retina.jpg": "5bb4fbe62455b20b",
    "skimage__rocket.jpg": "d71866a9bf955cda",
    "sklearn__china.jpg": "ec37439e3b6d2c5e",
    "sklearn__flower.jpg": "b7b855949f44d27d",
}
