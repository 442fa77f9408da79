"""ETS: Efficient Tree Search and its baselines for inference-time search on math problems."""

__version__ = "0.1.0"

from ets.config import ConfigError, SearchConfig
from ets.tree import Tree

__all__ = ["ConfigError", "SearchConfig", "Tree", "__version__"]
