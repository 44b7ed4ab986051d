"""``croissant.json`` (:data:`pass_wds.format.manifest.CROISSANT`): the output described in MLCommons
Croissant 1.0 (what NeurIPS Datasets & Benchmarks asks of datasets and what dataset hubs read).

Every shard is a ``cr:FileObject`` (tar, with its sha256 and size); two ``cr:FileSet``s select the images and
the sample JSON members inside them; the ``samples`` record set has the key, the image and one field per
metadata column (read with a JSONPath from each sample's JSON). Written beside ``index.json``, just before it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from typing import Any

CONFORMS_TO = "http://mlcommons.org/croissant/1.0"
CC_BY_4 = "https://creativecommons.org/licenses/by/4.0/"
PASS_URL = "https://www.robots.ox.ac.uk/~vgg/data/pass/"
PASS_DESCRIPTION = (
    "PASS (Pictures without humAns for Self-Supervision): 1.4M CC-BY images from YFCC100M with no people in "
    "them, for self-supervised pretraining; every image keeps its creator for attribution. Repacked by "
    "pass-wds into size-balanced, globally shuffled WebDataset shards: each sample is <key>.<image ext> "
    "(the original bytes) and <key>.json (the metadata row plus _provenance)."
)
PASS_CITATION = (
    "@inproceedings{asano21pass,\n"
    "  author = {Yuki M. Asano and Christian Rupprecht and Andrew Zisserman and Andrea Vedaldi},\n"
    "  title = {{PASS}: An {ImageNet} replacement for self-supervised pretraining without humans},\n"
    "  booktitle = {NeurIPS Track on Datasets and Benchmarks},\n"
    "  year = {2021}\n"
    "}"
)

# The JSON-LD context of the Croissant specification (1.0, plus the two terms 1.1 added, which
# mlcroissant expects).
CONTEXT: dict[str, Any] = {
    "@language": "en",
    "@vocab": "https://schema.org/",
    "sc": "https://schema.org/",
    "cr": "http://mlcommons.org/croissant/",
    "rai": "http://mlcommons.org/croissant/RAI/",
    "dct": "http://purl.org/dc/terms/",
    "equivalentProperty": "cr:equivalentProperty",
    "samplingRate": "cr:samplingRate",
    "citeAs": "cr:citeAs",
    "column": "cr:column",
    "conformsTo": "dct:conformsTo",
    "data": {"@id": "cr:data", "@type": "@json"},
    "dataType": {"@id": "cr:dataType", "@type": "@vocab"},
    "examples": {"@id": "cr:examples", "@type": "@json"},
    "extract": "cr:extract",
    "field": "cr:field",
    "fileProperty": "cr:fileProperty",
    "fileObject": "cr:fileObject",
    "fileSet": "cr:fileSet",
    "format": "cr:format",
    "includes": "cr:includes",
    "isLiveDataset": "cr:isLiveDataset",
    "jsonPath": "cr:jsonPath",
    "key": "cr:key",
    "md5": "cr:md5",
    "parentField": "cr:parentField",
    "path": "cr:path",
    "recordSet": "cr:recordSet",
    "references": "cr:references",
    "regex": "cr:regex",
    "repeated": "cr:repeated",
    "replace": "cr:replace",
    "separator": "cr:separator",
    "source": "cr:source",
    "subField": "cr:subField",
    "transform": "cr:transform",
}

_IMAGE_TYPES = {
    "jpg": "image/jpeg",
    "png": "image/png",
    "webp": "image/webp",
    "gif": "image/gif",
    "tif": "image/tiff",
    "bmp": "image/bmp",
}
_KEY_REGEX = r"^([^.]*)\..*$"  # WebDataset: the key is the member name up to the first dot


def column_types(columns: Sequence[str], rows: Iterable[dict[str, Any]]) -> dict[str, str]:
    """``sc:Integer`` / ``sc:Float`` for columns whose non-null values are all numbers, else ``sc:Text``."""
    kinds: dict[str, set[str]] = {c: set() for c in columns}
    for row in rows:
        for c in columns:
            v = row.get(c)
            if v is None:
                continue
            if isinstance(v, bool) or not isinstance(v, int | float):
                kinds[c].add("text")
            else:
                kinds[c].add("int" if isinstance(v, int) else "float")
    out = {}
    for c, k in kinds.items():
        out[c] = "sc:Text" if not k or "text" in k else "sc:Integer" if k == {"int"} else "sc:Float"
    return out


def _json_path(column: str) -> str:
    return f"$.{column}" if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", column) else "$." + json.dumps(column)


def _field_id(column: str) -> str:
    safe = "".join(ch if ch.isalnum() or ch in "_-" else "_" for ch in column)
    return f"samples/{safe}"


def build(
    name: str,
    shardlist: Sequence[dict[str, Any]],
    *,
    columns: dict[str, str],
    image_exts: Iterable[str] = ("jpg",),
    description: str = PASS_DESCRIPTION,
    citation: str = PASS_CITATION,
    url: str = PASS_URL,
    license_url: str = CC_BY_4,
    version: str = "1.0.0",
    date_published: str = "2021-06-08",  # PASS v3.0 on Zenodo
    creator: str | None = None,
) -> dict[str, Any]:
    """The Croissant document of an output; ``shardlist`` entries as in ``index.json`` (``url``, ``filesize``,
    ``sha256``), ``columns`` maps each metadata column to its Croissant data type (:func:`column_types`)."""
    shards = [
        {
            "@type": "cr:FileObject",
            "@id": s["url"],
            "name": s["url"],
            "description": f"WebDataset shard, {s['nsamples']} samples",
            "contentUrl": s["url"],
            "contentSize": f"{s['filesize']} B",
            "encodingFormat": "application/x-tar",
            "sha256": s["sha256"],
        }
        for s in shardlist
    ]
    contained = [{"@id": s["url"]} for s in shardlist]
    exts = sorted({e.lower() for e in image_exts} or {"jpg"})
    image_formats = sorted({_IMAGE_TYPES.get(e, f"image/{e}") for e in exts})
    images = {
        "@type": "cr:FileSet",
        "@id": "image-files",
        "name": "image-files",
        "description": "the image member of every sample (original bytes)",
        "containedIn": contained,
        "encodingFormat": image_formats[0] if len(image_formats) == 1 else image_formats,
        "includes": [f"*.{e}" for e in exts],
    }
    sample_json = {
        "@type": "cr:FileSet",
        "@id": "json-files",
        "name": "json-files",
        "description": "the JSON member of every sample: the metadata row, then _provenance",
        "containedIn": contained,
        "encodingFormat": "application/json",
        "includes": "*.json",
    }
    key_of_file = {"regex": _KEY_REGEX}
    fields: list[dict[str, Any]] = [
        {
            "@type": "cr:Field",
            "@id": "samples/key",
            "name": "key",
            "description": "the sample key (the image file name stem)",
            "dataType": "sc:Text",
            "source": {"fileSet": {"@id": "json-files"}, "extract": {"jsonPath": "$._provenance.key"}},
            "references": {"field": {"@id": "images/key"}},
        },
        {
            "@type": "cr:Field",
            "@id": "samples/image",
            "name": "image",
            "description": "the image, as stored in the shard",
            "dataType": "sc:ImageObject",
            "source": {"field": {"@id": "images/image"}},
        },
    ]
    for column, dtype in columns.items():
        fields.append(
            {
                "@type": "cr:Field",
                "@id": _field_id(column),
                "name": column,
                "description": f"metadata column {column!r}",
                "dataType": dtype,
                "source": {
                    "fileSet": {"@id": "json-files"},
                    "extract": {"jsonPath": _json_path(column)},
                },
            }
        )
    record_sets = [
        {
            "@type": "cr:RecordSet",
            "@id": "images",
            "name": "images",
            "description": "the image of every sample, by key",
            "key": {"@id": "images/key"},
            "field": [
                {
                    "@type": "cr:Field",
                    "@id": "images/key",
                    "name": "key",
                    "dataType": "sc:Text",
                    "source": {
                        "fileSet": {"@id": "image-files"},
                        "extract": {"fileProperty": "filename"},
                        "transform": key_of_file,
                    },
                },
                {
                    "@type": "cr:Field",
                    "@id": "images/image",
                    "name": "image",
                    "dataType": "sc:ImageObject",
                    "source": {"fileSet": {"@id": "image-files"}, "extract": {"fileProperty": "content"}},
                },
            ],
        },
        {
            "@type": "cr:RecordSet",
            "@id": "samples",
            "name": "samples",
            "description": "one record per sample: key, image and every metadata column",
            "key": {"@id": "samples/key"},
            "field": fields,
        },
    ]
    doc: dict[str, Any] = {
        "@context": CONTEXT,
        "@type": "sc:Dataset",
        "conformsTo": CONFORMS_TO,
        "name": name,
        "description": description,
        "license": license_url,
        "url": url,
        "citeAs": citation,
        "version": version,
        "datePublished": date_published,
        "keywords": ["self-supervised learning", "images", "webdataset", "CC-BY"],
        "distribution": [*shards, images, sample_json],
        "recordSet": record_sets,
    }
    if creator:
        doc["creator"] = {"@type": "sc:Organization", "name": creator}
    return doc


def with_shards(doc: dict[str, Any], shardlist: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The same document for another shard list (a new revision): the shard ``FileObject``s and the file
    sets' ``containedIn`` are replaced, everything else (record sets, column types, texts) is kept."""
    fresh = build(str(doc.get("name", "")), shardlist, columns={})
    files = [d for d in fresh["distribution"] if d.get("@type") == "cr:FileObject"]
    contained = [{"@id": s["url"]} for s in shardlist]
    rest = []
    for item in doc.get("distribution", []):
        if isinstance(item, dict) and item.get("@type") == "cr:FileObject":
            continue
        if isinstance(item, dict) and "containedIn" in item:
            item = {**item, "containedIn": contained}
        rest.append(item)
    return {**doc, "distribution": [*files, *rest]}


def dumps(doc: dict[str, Any]) -> bytes:
    return (json.dumps(doc, indent=1, ensure_ascii=False) + "\n").encode("utf-8")
