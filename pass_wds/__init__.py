"""pass-wds: PASS (or any image collection) → WebDataset shards → exact, resumable DDP streaming."""

from typing import TYPE_CHECKING, Any

from pass_wds.config import ConfigError, ConvertConfig

if TYPE_CHECKING:
    from pass_wds.loading import LoaderConfig, make_loader


def __getattr__(name: str) -> Any:
    """Import the loader (and torch) only when it is used, so ``make-shards`` starts fast."""
    if name in ("make_loader", "LoaderConfig"):
        from pass_wds import loading

        return getattr(loading, name)
    raise AttributeError(f"module 'pass_wds' has no attribute {name!r}")


__version__ = "0.1.0"

__all__ = ["ConfigError", "ConvertConfig", "LoaderConfig", "__version__", "make_loader"]
