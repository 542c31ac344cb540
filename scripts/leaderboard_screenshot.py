"""Render a leaderboard page (``probseg-bench leaderboard --format html -o PAGE``) to a PNG with headless Chromium.

Usage: ``python scripts/leaderboard_screenshot.py PAGE.html OUT.png [--width 1400] [--chromium /usr/bin/chromium]``
(the viewport widens to the widest table, so every column is in the picture).

Uses Playwright for Python (the ``browser`` extra) with the system's Chromium (Debian: ``apt-get install chromium``)
as its executable: no browser is downloaded. The page is loaded from ``file://``; the screenshot is of the full page.
Exits with a one-line message when Playwright or Chromium is missing or the page logs a console error.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path
from typing import Any

CANDIDATES = ("chromium", "chromium-browser", "google-chrome")


def find_chromium(explicit: str | None = None) -> str | None:
    """The Chromium executable: ``explicit``, else $PROBSEG_CHROMIUM, else the first of chromium / chromium-browser /
    google-chrome on PATH; None when there is none."""
    for name in (explicit, os.environ.get("PROBSEG_CHROMIUM"), *CANDIDATES):
        if name:
            found = shutil.which(name)
            if found:
                return found
    return None


def screenshot(page_path: Path, out: Path, width: int = 1400, chromium: str | None = None,
               browser: Any = None) -> list[str]:
    """Load ``page_path`` in headless Chromium at ``width`` CSS pixels and save a full-page PNG to ``out``; in
    ``browser`` (a Playwright Browser) when given, else in a Chromium launched for it.

    Returns:
        The console errors the page logged (none for a good page).

    Raises:
        RuntimeError: Chromium not found (one line naming what was looked for).
        ImportError: Playwright not installed.
    """
    if browser is not None:
        return _shoot(browser, page_path, out, width)
    from playwright.sync_api import sync_playwright

    executable = find_chromium(chromium)
    if executable is None:
        raise RuntimeError(f"no Chromium found (tried {', '.join(CANDIDATES)} on PATH and $PROBSEG_CHROMIUM); "
                           "install it, e.g. apt-get install chromium")
    with sync_playwright() as p:
        launched = p.chromium.launch(executable_path=executable, headless=True, args=["--no-sandbox"])
        try:
            return _shoot(launched, page_path, out, width)
        finally:
            launched.close()


def _shoot(browser: Any, page_path: Path, out: Path, width: int) -> list[str]:
    errors: list[str] = []
    page = browser.new_page(viewport={"width": width, "height": 900}, device_scale_factor=1)
    try:
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(Path(page_path).resolve().as_uri())
        # widen the viewport to the widest table, so that the screenshot shows every column
        needed = page.evaluate("Math.max(0, ...Array.from(document.querySelectorAll('table'), t => t.scrollWidth))")
        if needed + 80 > width:
            page.set_viewport_size({"width": int(needed) + 80, "height": 900})
        page.screenshot(path=str(out), full_page=True)
    finally:
        page.close()
    return errors


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("page", type=Path, help="the HTML page")
    parser.add_argument("out", type=Path, help="the PNG to write")
    parser.add_argument("--width", type=int, default=1400, help="viewport width in CSS pixels [1400]")
    parser.add_argument("--chromium", default=None, help="Chromium executable [chromium on PATH]")
    args = parser.parse_args(argv)
    if not args.page.is_file():
        print(f"page {args.page}: no such file", file=sys.stderr)
        return 2
    try:
        errors = screenshot(args.page, args.out, args.width, args.chromium)
    except (ImportError, RuntimeError) as exc:
        print(f"screenshot: {exc}", file=sys.stderr)
        return 2
    if errors:
        print(f"page {args.page}: console errors: {'; '.join(errors)}", file=sys.stderr)
        return 1
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
