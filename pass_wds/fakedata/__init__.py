"""PASS-shaped raw data, generated: for trying make-shards without the 130 GB download, for the tests and for
the benchmarks (``scripts/make_fake_pass.py`` is its command line).

The real PASS release is ten GNU tars ``PASS.<i>.tar`` whose members are
``PASS_dataset/dummy_folder/<hash>.jpeg`` (``hash`` = 32 lowercase hex chars) plus ``pass_metadata.csv``
keyed by ``hash``. This package writes the same layout with synthetic, photo-like JPEGs
(:mod:`~pass_wds.fakedata.images`) or with variants of real photos (``photos=DIR``), and a metadata CSV full of
hard text (:mod:`~pass_wds.fakedata.metadata`).

With ``bad=True`` it also plants every kind of bad input make-shards must reject (and a few unusual but valid
ones it must keep; :mod:`~pass_wds.fakedata.bad`), and writes ``expected.json`` saying exactly which keys must
end up in the shards and which must be rejected with which reason (:mod:`~pass_wds.fakedata.raw`).
``make_listing`` writes only a metadata CSV and a tar listing of any size (1.44M rows in seconds) for planning
benchmarks (:mod:`~pass_wds.fakedata.listing`). Everything is a pure function of ``seed``.
"""

from pass_wds.fakedata.bad import bomb_png, truncated_jpeg
from pass_wds.fakedata.images import draw_size, encode_jpeg, encode_png, synth_image
from pass_wds.fakedata.layout import (
    EXPECTED_NAME,
    LISTING_NAME,
    MEMBER_DIR,
    METADATA_NAME,
    REASONS,
    member_name,
    pass_hash,
)
from pass_wds.fakedata.listing import Listing, draw_jpeg_sizes, make_listing, read_listing
from pass_wds.fakedata.metadata import (
    COLUMNS,
    HARD_NAMES,
    LICENSES,
    PLAIN_NAMES,
    expected_json_value,
    metadata_row,
    read_metadata,
    write_metadata,
)
from pass_wds.fakedata.raw import FakePassConfig, FakePassResult, make_fake_pass

__all__ = [
    "COLUMNS",
    "EXPECTED_NAME",
    "HARD_NAMES",
    "LICENSES",
    "LISTING_NAME",
    "MEMBER_DIR",
    "METADATA_NAME",
    "PLAIN_NAMES",
    "REASONS",
    "FakePassConfig",
    "FakePassResult",
    "Listing",
    "bomb_png",
    "draw_jpeg_sizes",
    "draw_size",
    "encode_jpeg",
    "encode_png",
    "expected_json_value",
    "make_fake_pass",
    "make_listing",
    "member_name",
    "metadata_row",
    "pass_hash",
    "read_listing",
    "read_metadata",
    "synth_image",
    "truncated_jpeg",
    "write_metadata",
]
