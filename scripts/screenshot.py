"""Regenerates docs/_static/demo.png: the demo in preview mode, in Debian's Chromium.

.venv/bin/python scripts/screenshot.py [--width 1280] [--out docs/_static/demo.png]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import threading
from pathlib import Path

from playwright.sync_api import sync_playwright
from werkzeug.serving import make_server

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from examples.demo.app import create_app  # noqa: E402

#: How the screenshots' Chromium is started (no sandbox as root, no network of its own).
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking"]


def chromium() -> str:
    """Debian's chromium, or TOUCAN_TEST_CHROMIUM; exits saying what to install."""
    path = os.environ.get("TOUCAN_TEST_CHROMIUM") or shutil.which("chromium")
    if path is None:
        sys.exit("needs Debian's chromium (apt-get install chromium) or TOUCAN_TEST_CHROMIUM")
    return path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=900)
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "_static" / "demo.png")
    args = parser.parse_args()
    executable = chromium()
    os.environ.pop("TOUCAN_API_KEY", None)  # preview mode
    server = make_server("127.0.0.1", 0, create_app(), threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_port}/"
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": args.width, "height": args.height})
            page.goto(url)
            page.wait_for_function("window.toucanPreview && window.toucanPreview.tokens.length")
            page.wait_for_timeout(500)
            args.out.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(args.out), full_page=False)
            browser.close()
    finally:
        server.shutdown()
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
