"""Smoke test: the benchmark entry point runs end to end with tiny sizes (so it cannot rot).

It asserts that every section was measured and written, never on the numbers' values
against fixed thresholds: benchmarks are not tests.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from .servers import ROOT


def test_benchmarks_quick_run_writes_results_and_plot(tmp_path: Path) -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks",
            "--quick",
            "--latency",
            "0.02",
            "--out",
            str(tmp_path),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    results = (tmp_path / "RESULTS.md").read_text()
    for heading in (
        "## Targets",
        "## 1. Hot-path overhead",
        "## 2. Against the hand-written",
        "## 3. Stampede",
        "## 4. Connection reuse",
        "## 5. Growth",
        "## 6. Refresh-ahead",
    ):
        assert heading in results
    assert "| WSGI · SimpleCache |" in results and "| gunicorn · Redis + front cache |" in results
    assert "| hand-written (requests.post) | " in results
    png = tmp_path / "benchmarks.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
