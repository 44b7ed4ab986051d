"""The on-disk contract in ``format/``: each piece written and read in one module, one reason vocabulary."""

from __future__ import annotations

import json

from pass_wds import fakedata as fd
from pass_wds.format import manifest, reasons
from pass_wds.format.idx import idx_line, idx_text, parse_idx
from pass_wds.format.samples import PROVENANCE, build_sample_json, parse_sample_json, provenance


def test_idx_lines_written_are_parsed_back() -> None:
    lines = [
        idx_line([("k1.jpg", 512, 10), ("k1.json", 1536, 20)]),
        idx_line([("a_b-2.png", 3072, 7), ("a_b-2.json", 4096, 30)]),
    ]
    assert lines[0] == "jpg 512 10 k1.jpg json 1536 20 k1.json"
    index = parse_idx(idx_text(lines).decode())
    assert index.keys == ["k1", "a_b-2"] and index.named
    assert [tuple(tuple(m) for m in ms) for ms in index.members] == [
        (("jpg", 512, 10), ("json", 1536, 20)),
        (("png", 3072, 7), ("json", 4096, 30)),
    ]


def test_sample_json_built_is_parsed_back() -> None:
    prov = provenance("k", "PASS.0.tar", "d/k.jpeg", width=3, height=2, format="JPEG", data=b"xyz")
    raw = build_sample_json('"hash":"k","n":1,"t":"é\\n"', prov)
    assert (
        raw
        == json.dumps(
            {"hash": "k", "n": 1, "t": "é\n", PROVENANCE: prov}, ensure_ascii=False, separators=(",", ":")
        ).encode()
    )
    assert parse_sample_json(raw) == {"hash": "k", "n": 1, "t": "é\n", PROVENANCE: prov}
    assert list(prov) == ["key", "source", "member", "width", "height", "format", "bytes", "crc32"]
    again = provenance("k", "s", "m", width=1, height=1, format="JPEG", data=b"", original=(9, 8, "PNG"))
    assert list(again)[-3:] == ["original_width", "original_height", "original_format"]
    assert parse_sample_json(None) == {} and parse_sample_json(b"[1, 2]") == {"value": [1, 2]}


def test_owned_names_are_what_a_pass_wds_manifest_lists() -> None:
    ours = {
        "__kind__": manifest.KIND,
        "plan_digest": "d",
        "shardlist": [{"url": "p-000000.tar", "idx": "p-000000.idx"}, {"url": "sub/x.tar"}, "junk"],
    }
    assert manifest.listed_names(ours) == {"p-000000.tar", "p-000000.idx"} | manifest.OUTPUT_FILES
    # a wids index that pass-wds did not write (no plan digest) claims nothing: its files are not ours
    assert manifest.listed_names({**ours, "plan_digest": None}) == set()
    assert manifest.listed_names({**ours, "__kind__": "other"}) == set()
    assert manifest.listed_names(None) == set() and manifest.listed_names([ours]) == set()
    assert manifest.OUTPUT_FILES == {manifest.INDEX, *manifest.SIDE_FILES}


def test_one_reason_vocabulary() -> None:
    # every reason the fake PASS plants for errors.jsonl is a word of the vocabulary
    assert set(fd.REASONS) <= reasons.REASONS
    words = {v for k, v in vars(reasons).items() if k.isupper() and isinstance(v, str)}
    assert words == reasons.REASONS

    class Tagged(Exception):
        reason = reasons.BOMB

    class Foreign(Exception):
        reason = "bomb"  # not one of ours

    assert reasons.reason_of(Tagged()) == reasons.BOMB
    assert reasons.reason_of(Foreign()) == reasons.FAILED
    assert reasons.reason_of(ValueError("x")) == reasons.FAILED
    rec = reasons.Rejection("k\udcff", "PASS.0.tar", "m", reasons.CORRUPT).to_json()
    assert rec == {"key": "k\\xff", "source": "PASS.0.tar", "member": "m", "reason": "corrupt", "detail": ""}
