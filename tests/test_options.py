"""Each option declared once (issue 17 item 3): types, values, flags, the plan digest's options, the recorded
config and make_loader's keywords all derive from the declarations in ConvertConfig and LoaderConfig."""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import types
import typing
from pathlib import Path
from typing import Any

import pytest

from pass_wds.cli import make_shards_main
from pass_wds.cli.convert import add_make_shards_arguments
from pass_wds.config import (
    ConfigError,
    add_option_arguments,
    check_options,
    declared,
    from_dict,
    option,
    option_table,
)
from pass_wds.convert.options import OUTPUT_OPTIONS, ConvertConfig, output_options, recorded_config
from pass_wds.loading.loader import LoaderConfig, make_loader


def _wrong_value(hint: Any) -> Any:
    """A value of a type ``hint`` does not accept."""
    union = typing.get_origin(hint) in (typing.Union, types.UnionType)
    accepted = set(typing.get_args(hint)) if union else {hint}
    if list[str] in accepted:
        accepted.add(str)  # a single input as a string is a list of one (ConvertConfig.__post_init__)
    for candidate in ("many", 7, True, ["x"], {"k": "v"}, 1.5):
        ok = any(
            (t is int and isinstance(candidate, int) and not isinstance(candidate, bool))
            or (t is bool and isinstance(candidate, bool))
            or (t is str and isinstance(candidate, str))
            or (typing.get_origin(t) is list and isinstance(candidate, list))
            or (typing.get_origin(t) is dict and isinstance(candidate, dict))
            or t is Any
            for t in accepted
        )
        if not ok:
            return candidate
    raise AssertionError(f"no wrong value for {hint}")


@pytest.mark.parametrize("cls,flags", [(ConvertConfig, True), (LoaderConfig, False)])
def test_every_wrong_type_is_one_line_naming_the_option(cls: type, flags: bool) -> None:
    base = {"inputs": ["x.tar"], "output": "out"} if cls is ConvertConfig else {"source": "s/index.json"}
    for d in declared(cls):
        bad = _wrong_value(d.hint)
        cfg = from_dict(cls, {**base, d.name: bad})
        with pytest.raises(ConfigError) as e:
            cfg.validate_values()  # type: ignore[attr-defined]
        text = str(e.value)
        assert len(text.splitlines()) == 1 and d.shown(flags) in text, (d.name, text)


def test_the_two_examples_of_the_issue() -> None:
    with pytest.raises(ConfigError, match=r"^batch_size must be an integer, got '8'$"):
        from_dict(LoaderConfig, {"source": "s", "batch_size": "8"}).validate_values()
    with pytest.raises(ConfigError, match=r"^--slurm-cores must be an integer or null, got 'many'$"):
        from_dict(ConvertConfig, {"inputs": ["x"], "output": "o", "slurm_cores": "many"}).validate_values()


@pytest.mark.parametrize(
    "cls,values,words",
    [
        (ConvertConfig, {"seed": -1}, "--seed must be >= 0"),
        (ConvertConfig, {"quality": 101}, "--quality must be in 1..100"),
        (ConvertConfig, {"shard_size": "lots"}, "--shard-size: cannot parse 'lots'"),
        (ConvertConfig, {"name": "a b"}, "--name must be letters, digits"),
        (ConvertConfig, {"cluster": "k8s"}, "--cluster must be 'local' or 'slurm'"),
        (LoaderConfig, {"remainder": "keep"}, "remainder must be 'drop' or 'pad'"),
        (LoaderConfig, {"num_workers": -1}, "num_workers must be >= 0"),
        (LoaderConfig, {"shuffle_buffer_bytes": "0MB"}, "shuffle_buffer_bytes: size must be positive"),
        (LoaderConfig, {"decode": "gpu"}, "decode must be 'accurate', 'fast' or 'device'"),
    ],
)
def test_wrong_values_name_the_option(cls: type, values: dict[str, Any], words: str) -> None:
    base = {"inputs": ["x.tar"], "output": "out"} if cls is ConvertConfig else {"source": "s/index.json"}
    with pytest.raises(ConfigError) as e:
        from_dict(cls, {**base, **values}).validate_values()  # type: ignore[attr-defined]
    assert str(e.value).startswith(words) and len(str(e.value).splitlines()) == 1, str(e.value)


def test_cli_and_yaml_wrong_types_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("slurm_cores: many\n")
    rc = make_shards_main(["--config", str(cfg), str(tmp_path / "x.tar"), "-o", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert rc == 2 and err == "make-shards: error: --slurm-cores must be an integer or null, got 'many'\n"


def test_the_plan_digest_and_the_record_keep_their_options() -> None:
    """The options in the plan digest and those left out of index.json are exactly those before the
    declarations (a change here would re-key every output's resume)."""
    assert set(OUTPUT_OPTIONS) == {
        "name", "key_column", "shard_size", "max_count", "seed", "validate", "allow_missing_metadata",
        "resize_max_side", "quality", "max_image_pixels", "creator_column",
    }  # fmt: skip
    recorded = set(recorded_config(ConvertConfig(inputs=["a"], output="o")))
    assert recorded == set(OUTPUT_OPTIONS) | {"inputs", "metadata"}


def test_a_new_option_needs_no_other_edit(capsys: pytest.CaptureFixture[str]) -> None:
    """A field declared with option() gets its flag, its type and value checks, its place in the plan digest
    (output=True) or out of the record (recorded=False), and its line in the option table."""
    Extended = dataclasses.make_dataclass(
        "Extended",
        [
            ("tile_size", int, option(16, "tile edge in px", output=True, minimum=1, metavar="PX")),
            ("where_it_ran", str | None, option(None, "a host name", recorded=False)),
        ],
        bases=(ConvertConfig,),
    )
    parser = argparse.ArgumentParser()
    add_option_arguments(parser, Extended)
    assert vars(parser.parse_args(["x.tar", "--tile-size", "32"])) == {"inputs": ["x.tar"], "tile_size": 32}
    assert "--tile-size PX" in parser.format_help() and "tile edge in px" in parser.format_help()
    cfg = from_dict(Extended, {"inputs": ["x.tar"], "output": "o", "tile_size": 32})
    cfg.validate_values()
    assert output_options(cfg)["tile_size"] == 32
    assert output_options(from_dict(Extended, {"tile_size": 8})) != output_options(cfg)  # digest differs
    assert "tile_size" in recorded_config(cfg) and "where_it_ran" not in recorded_config(cfg)
    with pytest.raises(ConfigError, match=r"^--tile-size must be an integer, got 'big'$"):
        from_dict(Extended, {"inputs": ["x"], "output": "o", "tile_size": "big"}).validate_values()
    with pytest.raises(ConfigError, match=r"^--tile-size must be >= 1, got 0$"):
        from_dict(Extended, {"inputs": ["x"], "output": "o", "tile_size": 0}).validate_values()
    assert "``tile_size`` (an integer; default 16): tile edge in px" in option_table(Extended)
    Loader2 = dataclasses.make_dataclass(
        "Loader2", [("crop_jitter", float, option(0.0, "jitter", output=True))], bases=(LoaderConfig,)
    )
    with pytest.raises(ConfigError, match=r"^crop_jitter must be a number, got 'lots'$"):
        check_options(from_dict(Loader2, {"source": "s", "crop_jitter": "lots"}), flags=False)


def test_make_shards_flags_are_the_declared_options() -> None:
    parser = argparse.ArgumentParser()
    add_make_shards_arguments(parser)
    dests = {a.dest for a in parser._actions} - {"help", "config", "dry_run"}
    flagged = {d.name for d in declared(ConvertConfig) if d.option.flag != ""}
    assert dests == flagged | {"storage_options"}  # storage options: the shared --storage-options JSON


def test_make_loader_keywords_are_the_loader_options() -> None:
    """make_loader spells its keywords out (IDE help, static checks); this keeps them the declared options:
    a new LoaderConfig field needs its keyword in make_loader (same name, type and default), nothing else."""
    params = inspect.signature(make_loader).parameters
    names = [n for n, p in params.items() if p.kind is p.KEYWORD_ONLY]
    fields = [d.name for d in declared(LoaderConfig) if d.name != "source"]
    assert names == fields, "make_loader's keywords must be LoaderConfig's fields, in order"
    hints = typing.get_type_hints(make_loader)
    for d in declared(LoaderConfig):
        if d.name in ("source", "recipe", "batch_size"):
            continue
        default = params[d.name].default
        want = None if d.name == "storage_options" else d.default  # None: a fresh {} per call
        assert default == want, (d.name, default, d.default)
        want_hint = d.hint | None if d.name == "storage_options" else d.hint
        assert hints[d.name] == want_hint, (d.name, hints[d.name], d.hint)
    assert all(f"``{d.name}``" in (make_loader.__doc__ or "") for d in declared(LoaderConfig))
    with pytest.raises(ConfigError, match=r"^unknown option\(s\) in make_loader\(\): num_worker$"):
        make_loader("s", batch_size=1, num_worker=2)  # type: ignore[call-arg]
