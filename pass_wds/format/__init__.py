"""The on-disk contract between make-shards and the loader: readers and writers side by side.

* :mod:`~pass_wds.format.tar`: ustar member headers (write) and the one header parser (read).
* :mod:`~pass_wds.format.keys`: file name → key, and the cleaning that makes a key safe for every reader.
* :mod:`~pass_wds.format.samples`: image extensions and the sample JSON's provenance field.
* :mod:`~pass_wds.format.idx`: DALI ``.idx`` v1.2 (write and parse) and the per-shard sample layout.
* :mod:`~pass_wds.format.manifest`: ``index.json`` and the side files (schema, write, read).
* :mod:`~pass_wds.format.reasons`: rejection reasons of ``errors.jsonl``.

Both halves depend on this package; it imports neither torch nor the loader, so ``pass-wds verify``,
``inspect`` and ``urls`` start fast.
"""
