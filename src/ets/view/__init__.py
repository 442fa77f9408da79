"""``ets view``: the trees of a run (or of two runs side by side) as one
self-contained HTML page.

    from ets.view import build_view
    build_view(["runs/ets_16", "runs/rebase_16"], "view.html")
"""

from ets.view.data import RunView, Selection, ViewError, selections
from ets.view.page import build_view, render_page

__all__ = ["RunView", "Selection", "ViewError", "build_view", "render_page", "selections"]
