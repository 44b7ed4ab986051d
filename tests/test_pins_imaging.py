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
    "cameratrapai__african_elephants.jpg": "cd6b36d8311f2d0c",
    "exifsamples__Canon_40D.jpg": "f3cb085c3695b87c",
    "exifsamples__Nikon_D70.jpg": "e1c30f521340baa4",
    "exifsamples__Olympus_C8080WZ.jpg": "ce43fa6d4f3b3269",
    "exifsamples__Sony_HDR-HC3.jpg": "2341e24ffe6a8c73",
    "gradio__cheetah1.jpg": "e4408e46e27e983b",
    "gradio__lion.jpg": "51bd58559d48a46e",
    "img2dataset__123_456.jpg": "9fd74339f21bdea2",
    "img2dataset__208_495.jpg": "d11ad500dcb1a02e",
    "img2dataset__321_421.jpg": "81b92c548eacc4d8",
    "img2dataset__389_535.jpg": "9e02d841e22be4aa",
    "img2dataset__416_264.jpg": "6bf19ab9e44384f6",
    "img2dataset__456_123.jpg": "bbedc8e59f0c1c98",
    "img2dataset__524_316.jpg": "4ae325f6340095d4",
    "ljt__monkey16.png": "64b4a293fe481cac",
    "ljt__testimgari.jpg": "ed5be12e0adc03f4",
    "ljt__testorig.jpg": "d9b5f1215791f455",
    "max-srenh__food.png": "2af5bed0748f76be",
    "pillow__16bit.cropped.tif": "87567ae217808124",
    "pillow__avif_hopper.heif": "e514011e88cce8da",
    "pillow__decompression_bomb.gif": "728983ce98f75513",
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
    "pillow__truncated_image.png": "4c607b62e3cf381e",
    "pillow__truncated_jpeg.jpg": "aec698ffeceed86c",
    "pillow__ultrahdr.jpg": "dcc905bc37624be7",
    "sharp__Landscape_1.jpg": "89fcf47e31a957ee",
    "sharp__Landscape_2.jpg": "a1f593e8f0977d9f",
    "sharp__Landscape_3.jpg": "c1e07017baf40237",
    "sharp__Landscape_4.jpg": "2808956b24a6d0e6",
    "sharp__Landscape_5.jpg": "be8e9a0903e31bc7",
    "sharp__Landscape_6.jpg": "ad52bff2146e6c9b",
    "sharp__Landscape_7.jpg": "9db794d88f0ce7f8",
    "sharp__Landscape_8.jpg": "c2ff17be301ea195",
    "sharp__corrupt-header.jpg": "9862fe8b7d89cb65",
    "sharp__truncated.jpg": "1ff69355b5bc9aab",
    "sharp__truncated.png": "d730aaf71f8db0d8",
    "sklearn__china.jpg": "ffae86041c43f5cd",
}
CORPUS: dict[str, str] = {
    "cameratrapai__african_elephants.jpg": "cd6b36d8311f2d0c",
    "cameratrapai__african_elephants_cmyk.jpg": "b6a0a90cb75f2543",
    "cameratrapai__african_elephants_truncated_file.jpg": "fd94605f4e5d112f",
    "cameratrapai__american_black_bear.jpg": "9b696c3501de712f",
    "cameratrapai__blank.jpg": "05db7195cfc8eb75",
    "cameratrapai__blank2.jpg": "6f3b6a790ebe9fc6",
    "cameratrapai__blank3.jpg": "15d41275640aded5",
    "cameratrapai__domestic_cattle.jpg": "ff4c5643dea42c24",
    "cameratrapai__domestic_dog.jpg": "ef9a9fa8a0ca4168",
    "cameratrapai__ocelot.jpg": "b52b02c218ba9a12",
    "cameratrapai__vehicle.jpg": "ffe5cc61aa53a8de",
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
    "gradio__cheetah.jpg": "e9aa5ee5d7f8e8e9",
    "gradio__cheetah1.jpg": "e4408e46e27e983b",
    "gradio__lion.jpg": "51bd58559d48a46e",
    "gradio__tower.jpg": "f17ed99d65c82ead",
    "img2dataset__123_456.jpg": "9fd74339f21bdea2",
    "img2dataset__208_495.jpg": "d11ad500dcb1a02e",
    "img2dataset__321_421.jpg": "81b92c548eacc4d8",
    "img2dataset__389_535.jpg": "9e02d841e22be4aa",
    "img2dataset__416_264.jpg": "6bf19ab9e44384f6",
    "img2dataset__456_123.jpg": "bbedc8e59f0c1c98",
    "img2dataset__524_316.jpg": "4ae325f6340095d4",
    "imgaug__quokka.jpg": "2a1d31fc59f63530",
    "ljt__monkey12.jpg": "e514011e88cce8da",
    "ljt__monkey16.png": "64b4a293fe481cac",
    "ljt__testimgari.jpg": "ed5be12e0adc03f4",
    "ljt__testorig.jpg": "d9b5f1215791f455",
    "max-caption__plane.jpg": "66cced91d2de1732",
    "max-color__bw-cherry-blossoms.jpg": "f80d0e718fb163d0",
    "max-color__bw-city.jpg": "f23571494db63e44",
    "max-incres__cat.jpg": "2713e3b986e7ffc1",
    "max-incres__dog.jpg": "d0868e00effe7114",
    "max-incres__pizza.jpg": "1c05d496d24de570",
    "max-incres__shuttle.jpg": "53c63730cba400f9",
    "max-objdet__a-pen-i-am.jpg": "f6a4c8e01b2cf853",
    "max-resnet__burger.jpg": "25f273493cfe1e4a",
    "max-resnet__coffee.jpg": "6d1e6546336931aa",
    "max-resnet__lamp1.jpg": "0618a93da2e9097b",
    "max-resnet__taxis.jpg": "0e2209ab9903bf98",
    "max-scene__bakery.jpg": "ca9c1807380a2fcd",
    "max-scene__city.jpg": "cb1fe2a6f05bed8a",
    "max-scene__paris.jpg": "5f1823ee7d0557dc",
    "max-scene__ruins.jpg": "0b35bd9922411b60",
    "max-segweb__airplane.jpg": "e79382c7b1f793ee",
    "max-segweb__aurora_borealis.jpg": "06351e6cca709409",
    "max-segweb__cow.jpg": "7a6db2e1288d738a",
    "max-segweb__milky_way.jpg": "5039a4768ca06a4c",
    "max-segweb__outer_space.jpg": "8d0acb6b5cadd873",
    "max-segweb__sportscar.jpg": "fbcd2a10659b562d",
    "max-segweb__terrace.jpg": "5d4ba140c5930817",
    "max-segweb__train.jpg": "8ca119cc02ebb803",
    "max-srenh__airplane.png": "b4eb470a2ca97f55",
    "max-srenh__elephant.png": "562c937aec99cba8",
    "max-srenh__food.png": "2af5bed0748f76be",
    "max-srenh__palm_tree.png": "ba2c20bfeff2917f",
    "max-srenh__penguin.png": "1027d901e1f1bac5",
    "max-style__beach-city.jpg": "83b5b1150984f3e7",
    "max-style__bridge.jpg": "60b81a66555b9ae9",
    "max-style__columns.jpg": "4c6a73f1927f2662",
    "max-style__flowers.jpg": "c0b014170be0ff2e",
    "nolmoonen__012mp-bus.jpg": "f0c306aaf54ca6b1",
    "pillow__16bit.cropped.tif": "87567ae217808124",
    "pillow__apng_mode_16bit.png": "7e49a2c4657e5d1f",
    "pillow__app13-multiple.jpg": "4b6adaa98dd17555",
    "pillow__avif_hopper.heif": "e514011e88cce8da",
    "pillow__avif_star.avifs": "36ede611dbec98a7",
    "pillow__broken.png": "e514011e88cce8da",
    "pillow__broken_data_stream.png": "6de60510925f5dc0",
    "pillow__crash-0c7e0e8e11ce787078f00b5b0ca409a167f070e0.tif": "e5e3d4f04ff03b30",
    "pillow__decompression_bomb.gif": "728983ce98f75513",
    "pillow__decompression_bomb_extents.gif": "ebc60269e90603cb",
    "pillow__dispose_bgnd.gif": "3cc92ef7f85cfe97",
    "pillow__empty_gps_ifd.jpg": "e911a9415e279916",
    "pillow__exif-dpi-zerodivision.jpg": "db102090f4a62f04",
    "pillow__exif-ifd-offset.jpg": "db102090f4a62f04",
    "pillow__exif_gps_typeerror.jpg": "f0601dd2e217154c",
    "pillow__exif_imagemagick_orientation.png": "581532c7c5b3496d",
    "pillow__flower.jpg": "e20b80eb965484e3",
    "pillow__flower2.jpg": "3f4d9ef8fa480da2",
    "pillow__hopper_16bit_qtables.jpg": "1795c246cdce3944",
    "pillow__hopper_bad_exif.jpg": "ac1a9051e00b4497",
    "pillow__hopper_gray.jpg": "40b5664646badc86",
    "pillow__hopper_orientation_6.webp": "536bb63225587908",
    "pillow__i_trns.png": "8b819fa6af04992d",
    "pillow__icc-after-SOF.jpg": "a58751adc4453748",
    "pillow__icc_profile_big.jpg": "00361a8325f545b7",
    "pillow__invalid-exif-without-x-resolution.jpg": "d7e52c563614517a",
    "pillow__invalid-exif.jpg": "db102090f4a62f04",
    "pillow__iss634.webp": "ca1ca2bdad5849ac",
    "pillow__jpeg_ff00_header.jpg": "3f4d9ef8fa480da2",
    "pillow__junk_jpeg_header.jpg": "47b734e459edcef6",
    "pillow__multipage.tiff": "4d39d2de9f24a4dd",
    "pillow__multiple_exif.jpg": "d4ef8c6b134cb034",
    "pillow__oom-225817ca0f8c663be7ab4b9e717b02c661e66834.tif": "e514011e88cce8da",
    "pillow__orientation_rectangle.jpg": "b82054c15402e8ba",
    "pillow__p_trns_single.png": "217074312a889212",
    "pillow__photoshop-200dpi-broken.jpg": "3564f78c0fdb4a87",
    "pillow__pil123p.png": "d926da432902a3fe",
    "pillow__pil_sample_cmyk.jpg": "3e47a8ff11dbce12",
    "pillow__png_decompression_dos.png": "12259c05fae7c245",
    "pillow__sugarshack.mpo": "92f8901687a6d8bc",
    "pillow__sugarshack_bad_mpo_header.jpg": "675eb02d4af69ec4",
    "pillow__sugarshack_no_data.mpo": "92f8901687a6d8bc",
    "pillow__tRNS_null_1x1.png": "ab03f09a2bc8249d",
    "pillow__tiff_strip_cmyk_jpeg.tif": "022041c3c592274a",
    "pillow__transparent.gif": "29da620631e8adcd",
    "pillow__transparent.png": "fe9e5a1924cc90dc",
    "pillow__transparent.webp": "7fa199ab84d89abf",
    "pillow__truncated_app14.jpg": "496d9fe8bb7a08f7",
    "pillow__truncated_end_chunk.png": "69e2475fc4ecbb62",
    "pillow__truncated_image.png": "4c607b62e3cf381e",
    "pillow__truncated_jpeg.jpg": "aec698ffeceed86c",
    "pillow__ultrahdr.jpg": "dcc905bc37624be7",
    "pillow__unknown_compression_method.png": "e514011e88cce8da",
    "pillow__xmp_tags_orientation.png": "3c1228b64f753563",
    "pillow__zero_width.gif": "e514011e88cce8da",
    "sharp__65536-uint32-limit.png": "2c165888cb79a7d3",
    "sharp__Landscape_1.jpg": "89fcf47e31a957ee",
    "sharp__Landscape_2.jpg": "a1f593e8f0977d9f",
    "sharp__Landscape_3.jpg": "c1e07017baf40237",
    "sharp__Landscape_4.jpg": "2808956b24a6d0e6",
    "sharp__Landscape_5.jpg": "be8e9a0903e31bc7",
    "sharp__Landscape_6.jpg": "ad52bff2146e6c9b",
    "sharp__Landscape_7.jpg": "9db794d88f0ce7f8",
    "sharp__Landscape_8.jpg": "c2ff17be301ea195",
    "sharp__bggn4a16.png": "e59bca0824afa9e5",
    "sharp__corrupt-header.jpg": "9862fe8b7d89cb65",
    "sharp__giant-image.jpg": "954b11008fe16910",
    "sharp__p3.png": "c3717eb1717ec469",
    "sharp__relax.jp2": "d7cc4291d244fb20",
    "sharp__tbgn2c16.png": "30b83f62e33bba86",
    "sharp__testimgl.jpg": "d977f962b181f61b",
    "sharp__truncated.jpg": "1ff69355b5bc9aab",
    "sharp__truncated.png": "d730aaf71f8db0d8",
    "skimage__brick.png": "8abf7f9d575433c9",
    "skimage__chelsea.png": "27ae42b12a3d6afc",
    "skimage__clock_motion.png": "8fbd24c425112983",
    "skimage__coffee.png": "d0c413174b4ab9cb",
    "skimage__coins.png": "dc5072ac8823fc18",
    "skimage__grass.png": "15d2f9b45289c8f8",
    "skimage__gravel.png": "edc54220d275d3a8",
    "skimage__hubble_deep_field.jpg": "231e0c7e902fa198",
    "skimage__moon.png": "fc8c619be1e2db56",
    "skimage__retina.jpg": "28ae9487c91bf3b5",
    "skimage__rocket.jpg": "0a6d2f8f2fcf7053",
    "sklearn__china.jpg": "ffae86041c43f5cd",
    "sklearn__flower.jpg": "61393625e36c5295",
}
