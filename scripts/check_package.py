"""Installs the built wheel into a clean venv and checks it imports and ships its files.

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
             "templates/toucan/macros.html", "templates/toucan/unavailable.html",
             "templates/toucan/embed.html", "templates/toucan/embed_layout.html"):
    assert files.joinpath(name).is_file(), name
from flask_toucan import Toucan, ToucanUser, EmbedToken, ToucanAPIError, InvalidToucanUser
print("flask_toucan", flask_toucan.__version__, "installed and complete")
"""


def main() -> int:
    dist = Path(sys.argv[1] if len(sys.argv) > 1 else "dist")
    wheels = sorted(dist.glob("flask_toucan-*.whl"))
    sdists = sorted(dist.glob("flask_toucan-*.tar.gz"))
    if len(wheels) != 1 or len(sdists) != 1:
        sys.exit(f"expected one wheel and one sdist in {dist}, found {wheels + sdists}")
    with tempfile.TemporaryDirectory() as tmp:
        venv.create(tmp, with_pip=True)
        python = Path(tmp) / "bin" / "python"
        subprocess.run([python, "-m", "pip", "install", "-q", str(wheels[0])], check=True)
        subprocess.run([python, "-c", CHECK], check=True, cwd=tmp)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
