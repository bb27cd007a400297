"""Regenerates docs/_static/own-chat.png: examples/own_chat against a FakeToucan, with the
offline model, after a two-turn conversation, in Debian's Chromium.

.venv/bin/python scripts/screenshot_chat.py [--out docs/_static/own-chat.png]
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
from pathlib import Path

from playwright.sync_api import sync_playwright
from werkzeug.serving import make_server

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from flask_toucan.testing import FakeToucan  # noqa: E402
from scripts.screenshot import CHROMIUM_ARGS, chromium  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--width", type=int, default=1000)
    parser.add_argument("--height", type=int, default=1100)
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "_static" / "own-chat.png")
    args = parser.parse_args()
    executable = chromium()
    os.environ.pop("CHAT_MODEL", None)  # the offline model
    with FakeToucan(api_key="fake-key") as fake:
        os.environ["TOUCAN_API_KEY"] = "fake-key"
        from examples.own_chat.app import create_app

        app = create_app({"TOUCAN_BASE_URL": fake.url})
        server = make_server("127.0.0.1", 0, app, threaded=True)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        url = f"http://127.0.0.1:{server.server_port}"
        try:
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
                page = browser.new_page(viewport={"width": args.width, "height": args.height})
                page.goto(url + "/sign-in")
                page.click("#as-alice")
                for turns, question in enumerate(("What sold best?", "Which orders are open?"), 1):
                    page.fill("#question", question)
                    page.click("#ask")
                    page.wait_for_function(
                        f"() => document.querySelectorAll('.turn').length === {turns}"
                        " && !!document.querySelector('#latest .answer strong')"
                    )
                page.wait_for_function(
                    "() => [...document.querySelectorAll('tc-result-renderer')].every("
                    "r => r.shadowRoot && r.shadowRoot.querySelector('svg rect'))"
                )
                page.wait_for_timeout(300)
                args.out.parent.mkdir(parents=True, exist_ok=True)
                page.screenshot(path=str(args.out), full_page=True)
                browser.close()
        finally:
            server.shutdown()
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
