"""ETS: Efficient Tree Search and its baselines for inference-time search on math problems."""

__version__ = "0.1.0"
