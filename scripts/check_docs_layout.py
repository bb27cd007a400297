"""Open the built docs in Chromium at 1280 px and fail if a page scrolls sideways.

Usage: python scripts/check_docs_layout.py <html dir>. The wide tables (configuration
reference, troubleshooting) are what once overflowed; every page is checked.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

from playwright.sync_api import sync_playwright


def main(html: Path) -> int:
    chromium = os.environ.get("TOUCAN_TEST_CHROMIUM") or shutil.which("chromium")
    if not chromium:
        print("Chromium is needed to check the docs' layout: apt-get install chromium")
        return 1
    pages = sorted(p for p in html.rglob("*.html") if "_static" not in p.parts)
    wide: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        for path in pages:
            page.goto(path.as_uri())
            overflow = page.evaluate(
                "document.documentElement.scrollWidth - document.documentElement.clientWidth"
            )
            if overflow > 1:
                wide.append(f"{path.relative_to(html)}: {overflow}px wider than the window")
        browser.close()
    for line in wide:
        print(line)
    print(f"docs layout: {len(pages)} pages at 1280 px, {len(wide)} overflowing")
    return 1 if wide else 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1])))
