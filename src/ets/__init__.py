"""ETS: Efficient Tree Search and its baselines for inference-time search on math problems."""

__version__ = "0.1.0"

from ets.config import ConfigError, SearchConfig
from ets.search import SearchError, SearchResult, search
from ets.tree import Tree

__all__ = ["ConfigError", "SearchConfig", "SearchError", "SearchResult", "Tree", "search", "__version__"]
