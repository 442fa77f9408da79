"""Headless Debian chromium, driven by Playwright, for the page's browser test,
its bench and its screenshots. Only the system's browser is used: Playwright's
own browser downloads are never needed (nor possible offline).
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def unavailable() -> str | None:
    """Why no browser can be had here, or None."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the playwright package is not installed (pip install playwright)"
    if not Path(CHROMIUM).exists():
        return f"{CHROMIUM} is missing (Debian: apt-get install chromium)"
    return None


@contextmanager
def chromium() -> Iterator:
    """A Playwright Browser on the system's chromium."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


def open_view(browser, page_path: str | Path, *, viewport: tuple[int, int] = (1500, 1000), fragment: str = ""):
    """Open a page of ``ets view`` from disk once its script has run; return the
    page, the URLs it requested and the script errors it raised (both lists grow
    as the page is used)."""
    page = browser.new_page(viewport={"width": viewport[0], "height": viewport[1]})
    requests: list[str] = []
    errors: list[str] = []
    page.on("request", lambda r: requests.append(r.url))
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(Path(page_path).resolve().as_uri() + fragment)
    page.wait_for_selector("body[data-ready='1']", timeout=15000)
    return page, requests, errors
