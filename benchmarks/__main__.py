"""``python -m benchmarks``: run every benchmark, write RESULTS.md and the plot."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from .report import command_line, update_readme, write_markdown, write_plot
from .run import Sizes, run_all

PLOT = "benchmarks.png"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument(
        "--latency",
        type=float,
        default=0.05,
        help="upstream latency injected into FakeToucan, seconds (default 0.05)",
    )
    parser.add_argument("--quick", action="store_true", help="tiny sizes (smoke test)")
    parser.add_argument(
        "--out",
        type=Path,
        default=Path(__file__).parent,
        help="where RESULTS.md and the plot go (default: benchmarks/)",
    )
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    results = run_all(args.latency, Sizes.quick() if args.quick else Sizes(), args.out)
    write_plot(results, args.out, PLOT)
    path = write_markdown(results, args.out, command_line(), PLOT)
    if args.out.resolve() == Path(__file__).parent.resolve():
        update_readme(path, Path(__file__).parent.parent / "README.md")
    print(f"wrote {path} and {args.out / PLOT} in {time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
