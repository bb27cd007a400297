"""Builds the sdist and wheel, checks them with twine, installs the wheel into a clean venv
and checks it imports and ships its files. Each step's output is shown only if it fails.

python scripts/check_package.py dist/
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import venv
from pathlib import Path

CHECK = """
import importlib.resources as r, flask_toucan
files = r.files("flask_toucan")
for name in ("py.typed", "static/toucan-refresh.js", "static/toucan-preview.js",
             "static/toucan-result.js",
             "templates/toucan/macros.html", "templates/toucan/unavailable.html",
             "templates/toucan/embed.html", "templates/toucan/embed_layout.html"):
    assert files.joinpath(name).is_file(), name
from flask_toucan import Toucan, ToucanUser, EmbedToken, ToucanAPIError, InvalidToucanUser
print("flask_toucan", flask_toucan.__version__, "installed and complete")
"""


def quietly(*command: object, cwd: str | None = None) -> None:
    """Run ``command``; its output goes out only when it fails."""
    done = subprocess.run([str(c) for c in command], cwd=cwd, capture_output=True, text=True)
    if done.returncode != 0:
        sys.stdout.write(done.stdout + done.stderr)
        sys.exit(f"failed: {' '.join(str(c) for c in command)}")


def main() -> int:
    dist = Path(sys.argv[1] if len(sys.argv) > 1 else "dist")
    root = Path(__file__).resolve().parent.parent
    quietly(sys.executable, "-m", "build", "--outdir", dist, root)
    wheels = sorted(dist.glob("flask_toucan-*.whl"))
    sdists = sorted(dist.glob("flask_toucan-*.tar.gz"))
    if len(wheels) != 1 or len(sdists) != 1:
        sys.exit(f"expected one wheel and one sdist in {dist}, found {wheels + sdists}")
    with tempfile.TemporaryDirectory() as tmp:
        venv.create(tmp, with_pip=True)
        python = Path(tmp) / "bin" / "python"
        quietly(sys.executable, "-m", "twine", "check", "--strict", *wheels, *sdists)
        quietly(python, "-m", "pip", "install", "-q", wheels[0])
        subprocess.run([python, "-c", CHECK], check=True, cwd=tmp)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
