"""Starting model servers (``ets serve``) and our PRM server."""
