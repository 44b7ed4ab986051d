"""pass-wds: PASS (or any image collection) → WebDataset shards → exact, resumable DDP streaming."""

from pass_wds.config import ConfigError, ConvertConfig

__version__ = "0.1.0"

__all__ = ["ConfigError", "ConvertConfig", "__version__"]
