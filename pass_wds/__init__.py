"""pass-wds: PASS (or any image collection) → WebDataset shards → exact, resumable DDP streaming."""

from typing import TYPE_CHECKING, Any

from pass_wds.convert.options import ConvertConfig
from pass_wds.errors import ConfigError, InputError, PassWdsError

if TYPE_CHECKING:
    from pass_wds.augment import load_recipe
    from pass_wds.convert.make import make_shards
    from pass_wds.decoding import DecodeError
    from pass_wds.format.errors import ShardError
    from pass_wds.loading import LoaderConfig, make_loader
    from pass_wds.storage import StorageError

_LAZY = {
    "make_shards": "pass_wds.convert.make",
    "make_loader": "pass_wds.loading",
    "LoaderConfig": "pass_wds.loading",
    "load_recipe": "pass_wds.augment",
    "DecodeError": "pass_wds.decoding",
    "ShardError": "pass_wds.format.errors",
    "StorageError": "pass_wds.storage",
}


def __getattr__(name: str) -> Any:
    """Import the loader (and torch) and the converter only when used, so every command starts fast."""
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'pass_wds' has no attribute {name!r}")


__version__ = "0.1.0"

__all__ = [
    "ConfigError",
    "ConvertConfig",
    "DecodeError",
    "InputError",
    "LoaderConfig",
    "PassWdsError",
    "ShardError",
    "StorageError",
    "__version__",
    "load_recipe",
    "make_loader",
    "make_shards",
]
