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
from pass_wds.imaging import Rejected, inspect_image, reencode

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
    "cameratrapai__african_elephants.jpg": "c8ccca1c6b6cf5fe",
    "exifsamples__Canon_40D.jpg": "f3cb085c3695b87c",
    "exifsamples__Nikon_D70.jpg": "e1c30f521340baa4",
    "exifsamples__Olympus_C8080WZ.jpg": "ce43fa6d4f3b3269",
    "exifsamples__Sony_HDR-HC3.jpg": "2341e24ffe6a8c73",
    "gradio__cheetah1.jpg": "2be2cea846ba7429",
    "gradio__lion.jpg": "63263add4991f73f",
    "img2dataset__123_456.jpg": "a7b8f7f3a99fa0c0",
    "img2dataset__208_495.jpg": "10d888d32525734f",
    "img2dataset__321_421.jpg": "e1b7e32300e519ac",
    "img2dataset__389_535.jpg": "f029bf31558380e0",
    "img2dataset__416_264.jpg": "f4415718631c70b1",
    "img2dataset__456_123.jpg": "aeec2ff624d47a1d",
    "img2dataset__524_316.jpg": "fbea6fcf0b7062b8",
    "ljt__monkey16.png": "64b4a293fe481cac",
    "ljt__testimgari.jpg": "ed5be12e0adc03f4",
    "ljt__testorig.jpg": "d9b5f1215791f455",
    "max-srenh__food.png": "2af5bed0748f76be",
    "pillow__16bit.cropped.tif": "87567ae217808124",
    "pillow__avif_hopper.heif": "9ffa8c10f1e983a8",
    "pillow__decompression_bomb.gif": "08df1f001502eaa0",
    "pillow__flower2.jpg": "ed5703192f19a381",
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
    "pillow__truncated_image.png": "1cf542f081a1466c",
    "pillow__truncated_jpeg.jpg": "aec698ffeceed86c",
    "pillow__ultrahdr.jpg": "731dfcbb30fffc25",
    "sharp__Landscape_1.jpg": "746cb4f6539f8fd8",
    "sharp__Landscape_2.jpg": "ad50fda08de1da74",
    "sharp__Landscape_3.jpg": "c9380286fb52026d",
    "sharp__Landscape_4.jpg": "644d273f24ac8f96",
    "sharp__Landscape_5.jpg": "c3289e3fc2d57113",
    "sharp__Landscape_6.jpg": "89d1a45dac8e402a",
    "sharp__Landscape_7.jpg": "a43d7f479dad480d",
    "sharp__Landscape_8.jpg": "b980cfe3dc6675fa",
    "sharp__corrupt-header.jpg": "9862fe8b7d89cb65",
    "sharp__truncated.jpg": "a27a90babbc7b921",
    "sharp__truncated.png": "5baed78bf877cca0",
    "sklearn__china.jpg": "3c68e355ec9d1344",
}
CORPUS: dict[str, str] = {
    "cameratrapai__african_elephants.jpg": "c8ccca1c6b6cf5fe",
    "cameratrapai__african_elephants_cmyk.jpg": "a0cb930259430fa8",
    "cameratrapai__african_elephants_truncated_file.jpg": "f233d60fb38d2047",
    "cameratrapai__american_black_bear.jpg": "b1b13cc143ccf5b1",
    "cameratrapai__blank.jpg": "cdb326ea266c6e84",
    "cameratrapai__blank2.jpg": "372b5bd0ea25bae8",
    "cameratrapai__blank3.jpg": "596c75a1d02b9082",
    "cameratrapai__domestic_cattle.jpg": "8d3ccf8daf445d50",
    "cameratrapai__domestic_dog.jpg": "706d5da48e8c61f0",
    "cameratrapai__ocelot.jpg": "4a3693fb5c920dc7",
    "cameratrapai__vehicle.jpg": "3861cfc2f42f1907",
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
    "gradio__cheetah.jpg": "0dd84dbfe00522f0",
    "gradio__cheetah1.jpg": "2be2cea846ba7429",
    "gradio__lion.jpg": "63263add4991f73f",
    "gradio__tower.jpg": "c68e87b7070d2051",
    "img2dataset__123_456.jpg": "a7b8f7f3a99fa0c0",
    "img2dataset__208_495.jpg": "10d888d32525734f",
    "img2dataset__321_421.jpg": "e1b7e32300e519ac",
    "img2dataset__389_535.jpg": "f029bf31558380e0",
    "img2dataset__416_264.jpg": "f4415718631c70b1",
    "img2dataset__456_123.jpg": "aeec2ff624d47a1d",
    "img2dataset__524_316.jpg": "fbea6fcf0b7062b8",
    "imgaug__quokka.jpg": "5a0320babe53e7be",
    "ljt__monkey12.jpg": "9ffa8c10f1e983a8",
    "ljt__monkey16.png": "64b4a293fe481cac",
    "ljt__testimgari.jpg": "ed5be12e0adc03f4",
    "ljt__testorig.jpg": "d9b5f1215791f455",
    "max-caption__plane.jpg": "1b63479c16a1ac76",
    "max-color__bw-cherry-blossoms.jpg": "78a5a4754a94bc51",
    "max-color__bw-city.jpg": "c679d6af82d5c7bb",
    "max-incres__cat.jpg": "20673e403ac8a755",
    "max-incres__dog.jpg": "b8380087a2fea9fc",
    "max-incres__pizza.jpg": "8f1598bcbf596db0",
    "max-incres__shuttle.jpg": "6b02d489f1cb6b62",
    "max-objdet__a-pen-i-am.jpg": "1084eeb56e714b8b",
    "max-resnet__burger.jpg": "f50db86aaa57b5e6",
    "max-resnet__coffee.jpg": "c6aaf147613634e4",
    "max-resnet__lamp1.jpg": "f6ec0a43688324a4",
    "max-resnet__taxis.jpg": "afa9b792efb372e3",
    "max-scene__bakery.jpg": "20fa15c628d61d5a",
    "max-scene__city.jpg": "9503256f12eeb376",
    "max-scene__paris.jpg": "0141cddb0a68c0f5",
    "max-scene__ruins.jpg": "de50b5bbe0dee3b3",
    "max-segweb__airplane.jpg": "a7e97babdfc0371e",
    "max-segweb__aurora_borealis.jpg": "4f49b8c6a06cf2b4",
    "max-segweb__cow.jpg": "941dc6b6ea3cc394",
    "max-segweb__milky_way.jpg": "5f6dd12d66cd0e34",
    "max-segweb__outer_space.jpg": "5598910bd91b3140",
    "max-segweb__sportscar.jpg": "0267f79f8e98520b",
    "max-segweb__terrace.jpg": "f9c9055468c5761a",
    "max-segweb__train.jpg": "540d1755610643e7",
    "max-srenh__airplane.png": "2ce02a042b66cdc2",
    "max-srenh__elephant.png": "993421eb2e8b6143",
    "max-srenh__food.png": "2af5bed0748f76be",
    "max-srenh__palm_tree.png": "f58bae2abbcfe53f",
    "max-srenh__penguin.png": "4db8efa43ccf334e",
    "max-style__beach-city.jpg": "5fc3661abaa72b46",
    "max-style__bridge.jpg": "ae91f0de8c5ab4ca",
    "max-style__columns.jpg": "ee516ab800bd5e9a",
    "max-style__flowers.jpg": "0d7e966710e769d6",
    "nolmoonen__012mp-bus.jpg": "602077e664ed6c90",
    "pillow__16bit.cropped.tif": "87567ae217808124",
    "pillow__apng_mode_16bit.png": "7e49a2c4657e5d1f",
    "pillow__app13-multiple.jpg": "f314f8af759f3349",
    "pillow__avif_hopper.heif": "9ffa8c10f1e983a8",
    "pillow__avif_star.avifs": "36ede611dbec98a7",
    "pillow__broken.png": "9ffa8c10f1e983a8",
    "pillow__broken_data_stream.png": "6de60510925f5dc0",
    "pillow__crash-0c7e0e8e11ce787078f00b5b0ca409a167f070e0.tif": "20d45048210658c3",
    "pillow__decompression_bomb.gif": "08df1f001502eaa0",
    "pillow__decompression_bomb_extents.gif": "ebc60269e90603cb",
    "pillow__dispose_bgnd.gif": "3cc92ef7f85cfe97",
    "pillow__empty_gps_ifd.jpg": "e911a9415e279916",
    "pillow__exif-dpi-zerodivision.jpg": "db102090f4a62f04",
    "pillow__exif-ifd-offset.jpg": "db102090f4a62f04",
    "pillow__exif_gps_typeerror.jpg": "88fa07fa80d9d4b1",
    "pillow__exif_imagemagick_orientation.png": "64528dce837e46f7",
    "pillow__flower.jpg": "84955cd5260b6702",
    "pillow__flower2.jpg": "ed5703192f19a381",
    "pillow__hopper_16bit_qtables.jpg": "1795c246cdce3944",
    "pillow__hopper_bad_exif.jpg": "a98fed393e705b1a",
    "pillow__hopper_gray.jpg": "40b5664646badc86",
    "pillow__hopper_orientation_6.webp": "536bb63225587908",
    "pillow__i_trns.png": "8b819fa6af04992d",
    "pillow__icc-after-SOF.jpg": "a58751adc4453748",
    "pillow__icc_profile_big.jpg": "f22fcfdbb15e24e6",
    "pillow__invalid-exif-without-x-resolution.jpg": "158419caf7036ed6",
    "pillow__invalid-exif.jpg": "db102090f4a62f04",
    "pillow__iss634.webp": "54e42c38525e3dc2",
    "pillow__jpeg_ff00_header.jpg": "ed5703192f19a381",
    "pillow__junk_jpeg_header.jpg": "371df58e1e5d5a6d",
    "pillow__multipage.tiff": "4d39d2de9f24a4dd",
    "pillow__multiple_exif.jpg": "d4ef8c6b134cb034",
    "pillow__oom-225817ca0f8c663be7ab4b9e717b02c661e66834.tif": "9ffa8c10f1e983a8",
    "pillow__orientation_rectangle.jpg": "b82054c15402e8ba",
    "pillow__p_trns_single.png": "217074312a889212",
    "pillow__photoshop-200dpi-broken.jpg": "3564f78c0fdb4a87",
    "pillow__pil123p.png": "d926da432902a3fe",
    "pillow__pil_sample_cmyk.jpg": "3e47a8ff11dbce12",
    "pillow__png_decompression_dos.png": "12259c05fae7c245",
    "pillow__sugarshack.mpo": "316601a26eac6749",
    "pillow__sugarshack_bad_mpo_header.jpg": "b00dce660455d29c",
    "pillow__sugarshack_no_data.mpo": "316601a26eac6749",
    "pillow__tRNS_null_1x1.png": "ab03f09a2bc8249d",
    "pillow__tiff_strip_cmyk_jpeg.tif": "022041c3c592274a",
    "pillow__transparent.gif": "29da620631e8adcd",
    "pillow__transparent.png": "fe9e5a1924cc90dc",
    "pillow__transparent.webp": "7fa199ab84d89abf",
    "pillow__truncated_app14.jpg": "496d9fe8bb7a08f7",
    "pillow__truncated_end_chunk.png": "69e2475fc4ecbb62",
    "pillow__truncated_image.png": "1cf542f081a1466c",
    "pillow__truncated_jpeg.jpg": "aec698ffeceed86c",
    "pillow__ultrahdr.jpg": "731dfcbb30fffc25",
    "pillow__unknown_compression_method.png": "9ffa8c10f1e983a8",
    "pillow__xmp_tags_orientation.png": "c7c2823372f6634d",
    "pillow__zero_width.gif": "9ffa8c10f1e983a8",
    "sharp__65536-uint32-limit.png": "5ed81bc90ce8269b",
    "sharp__Landscape_1.jpg": "746cb4f6539f8fd8",
    "sharp__Landscape_2.jpg": "ad50fda08de1da74",
    "sharp__Landscape_3.jpg": "c9380286fb52026d",
    "sharp__Landscape_4.jpg": "644d273f24ac8f96",
    "sharp__Landscape_5.jpg": "c3289e3fc2d57113",
    "sharp__Landscape_6.jpg": "89d1a45dac8e402a",
    "sharp__Landscape_7.jpg": "a43d7f479dad480d",
    "sharp__Landscape_8.jpg": "b980cfe3dc6675fa",
    "sharp__bggn4a16.png": "e59bca0824afa9e5",
    "sharp__corrupt-header.jpg": "9862fe8b7d89cb65",
    "sharp__giant-image.jpg": "a439b5ce18a9cfdc",
    "sharp__p3.png": "c3717eb1717ec469",
    "sharp__relax.jp2": "724a7a9851586948",
    "sharp__tbgn2c16.png": "30b83f62e33bba86",
    "sharp__testimgl.jpg": "d977f962b181f61b",
    "sharp__truncated.jpg": "a27a90babbc7b921",
    "sharp__truncated.png": "5baed78bf877cca0",
    "skimage__brick.png": "35062cdaace7d4cf",
    "skimage__chelsea.png": "5d99ced8e2d1fc8a",
    "skimage__clock_motion.png": "3d14113c0939bef1",
    "skimage__coffee.png": "387dc3b7ad9f5899",
    "skimage__coins.png": "0dff4310a5db4724",
    "skimage__grass.png": "40223ed07631a416",
    "skimage__gravel.png": "6684769ed0e1e6ba",
    "skimage__hubble_deep_field.jpg": "0d6b3a2a7a7cd707",
    "skimage__moon.png": "ccb6738f8be739e4",
    "skimage__retina.jpg": "daf81e356987aea8",
    "skimage__rocket.jpg": "f47e67cdf1b99e50",
    "sklearn__china.jpg": "3c68e355ec9d1344",
    "sklearn__flower.jpg": "4cda1669d87db86e",
}
