"""Writes RESULTS.md and the plot from one run's results."""

from __future__ import annotations

import os
import platform
import sys
from datetime import UTC, datetime
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from .run import Results

HOTPATH_TARGET = 1.05
BARE_TARGET = 1.25
REALISTIC_TARGET = 1.05
REALISTIC = "WSGI · realistic page (Flask-Login, layout, table)"


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (
        f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"{platform.system()} {platform.release()}"
    )


def verdict(ok: bool) -> str:
    return "met" if ok else "**missed**"


def write_markdown(results: Results, out: Path, command: str, plot_name: str) -> Path:
    r = results
    lines = [
        "# flask_toucan benchmarks",
        "",
        f"- Date: {datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')}",
        f"- Machine: {machine()}",
        f"- Command: `{command}`",
        f"- Upstream: `FakeToucan` on loopback with {r.latency * 1000:.0f} ms injected latency",
        "- All ratios are measured side by side in the same run (interleaved ABAB batches).",
        "",
        f"![benchmark plot]({plot_name})",
        "",
        "## Targets",
        "",
        "| target | result | |",
        "| --- | --- | --- |",
    ]

    def median(name: str) -> float:
        return float(r.hotpath.get(name, {}).get("median", float("nan")))

    simple, front = median("WSGI · SimpleCache"), median("WSGI · Redis + front cache")
    realistic = median(REALISTIC)
    g_simple, g_front = median("gunicorn · SimpleCache"), median("gunicorn · Redis + front cache")
    ours_per_user = [
        row["calls_per_user"] for row in r.naive_vs_ours if row["integration"] == "flask_toucan"
    ]
    p99 = {name: row["p99_ms"] for name, row in r.tail.items()}
    tail = p99.get("flask_toucan", float("nan")) / p99.get("hard-coded token", float("nan"))
    shared = [row for row in r.stampede if "single-flight" in row["variant"]]
    builder = r.markup.get("median", float("nan"))
    conn = r.connections.get("flask_toucan (TokenClient)", -1)
    first_prefetch = r.first_view.get("flask_toucan, prefetch on login", {}).get("share_waited")
    lines += [
        f"| warm view, bare page, WSGI ≤ {BARE_TARGET} | SimpleCache {simple:.3f}, "
        f"Redis + front cache {front:.3f} | "
        f"{verdict(simple <= BARE_TARGET and front <= BARE_TARGET)} |",
        f"| warm view, realistic page, WSGI ≤ {REALISTIC_TARGET} | {realistic:.3f} | "
        f"{verdict(realistic <= REALISTIC_TARGET)} |",
        f"| warm view over gunicorn (HTTP) ≤ {REALISTIC_TARGET} | SimpleCache {g_simple:.3f}, "
        f"Redis + front cache {g_front:.3f} | "
        f"{verdict(g_simple <= REALISTIC_TARGET and g_front <= REALISTIC_TARGET)} |",
        f"| p99 of warm views (8 threads, 1 user, alternated) ≤ 2 × hard-coded page's p99 | "
        f"{p99.get('flask_toucan', float('nan')):.2f} ms vs "
        f"{p99.get('hard-coded token', float('nan')):.2f} ms ({tail:.2f}×) | "
        f"{verdict(tail <= 2)} |",
        f"| Toucan calls per user per token lifetime = 1 | "
        f"{', '.join(f'{v:g}' for v in ours_per_user)} | "
        f"{verdict(all(v == 1 for v in ours_per_user))} |",
        "| stampede calls with single-flight = 1 (Redis, Sentinel, Cluster) | "
        f"{', '.join(str(row['calls']) for row in shared)} | "
        f"{verdict(all(row['calls'] == 1 for row in shared))} |",
        "| calls per user per lifetime across 4 workers = 1 (Redis, Sentinel, Cluster) | "
        f"{', '.join(str(row['per_lifetime']) for row in shared)} | "
        f"{verdict(all(row['per_lifetime'] == 1 for row in shared))} |",
        "| 5-minute tokens: Toucan calls per user per token = 1 (a token is served for 225 s) | "
        f"{r.short_tokens.get('mints_first_lifetime')} while the first is servable; an hour of "
        f"views every 10 s: {r.short_tokens.get('mints_per_hour')} calls for "
        f"{r.short_tokens.get('views')} views (3600 / 225 = 16) | "
        f"{verdict(r.short_tokens.get('mints_first_lifetime') == 1)} |",
        "| first view after sign-in that waited on Toucan: 0% with prefetch | "
        + ", ".join(f"{name} {row['share_waited']:.0%}" for name, row in r.first_view.items())
        + f" | {verdict(first_prefetch == 0)} |",
        "| signals with no receivers cost nothing measurable on a warm view (< 0.1%) | "
        f"{r.signals.get('no_receivers_ns', float('nan')):.0f} ns, "
        f"{r.signals.get('no_receivers_share', float('nan')):.3%} of a view "
        f"(Prometheus connected: ×{r.signals.get('prometheus_ratio', float('nan')):.3f}) | "
        f"{verdict(r.signals.get('no_receivers_share', 1) < 0.001)} |",
        f"| TCP connections per 100 mints = 1 | {conn} | {verdict(conn == 1)} |",
        f"| attribute builder: Markup.format page time ÷ ours > 1 (keep ours only if it pays) | "
        f"{builder:.3f} | {verdict(builder > 1)} |",
        "",
        "## 1. Hot-path overhead (warm token)",
        "",
        "Time of a page rendering `toucan_dashboard()` with a warm token, divided by the time of",
        "the same page with a hard-coded token string (ratio of batch times; 1.00 = free).",
        "",
        "| path · cache | median ratio | p25–p75 | rounds |",
        "| --- | --- | --- | --- |",
    ]
    for name, st in r.hotpath.items():
        lines.append(
            f"| {name} | {st['median']:.3f} | {st['p25']:.3f}–{st['p75']:.3f} | {st['n']:.0f} |"
        )
    lines += [
        "",
        "### Where a warm view's overhead goes (WSGI, µs per view, medians)",
        "",
        "| step | µs |",
        "| --- | --- |",
    ]
    for label, value in r.costs.items():
        lines.append(f"| {label} | {value:.1f} |")
    lines += [
        "",
        "## 2. Against the hand-written integration",
        "",
        f"{r.sizes.views} page views over 8 threads; the hand-written page calls `requests.post`",
        "on every view (Toucan's documented pattern, no cache, no connection reuse).",
        "",
        "| distinct users | integration | p50 ms | p99 ms | Toucan calls / 1,000 views | "
        "calls / user |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for row in r.naive_vs_ours:
        lines.append(
            f"| {row['users']} | {row['integration']} | {row['p50_ms']:.2f} | "
            f"{row['p99_ms']:.2f} | {row['calls_per_1000']:.0f} | "
            f"{row['calls_per_user']:.2f} |"
        )
    lines += [
        "",
        "### Tail latency of warm views",
        "",
        "One user, a warm token, 8 threads of the test client, the two pages alternated in",
        "four rounds after a warm-up (so neither side pays for the first mint or a cold start).",
        "",
        "| page | p50 ms | p99 ms | max ms |",
        "| --- | --- | --- | --- |",
    ]
    for name, row in r.tail.items():
        lines.append(
            f"| {name} | {row['p50_ms']:.2f} | {row['p99_ms']:.2f} | {row['max_ms']:.2f} |"
        )
    lines += [
        "",
        "### First analytics view after sign-in (gunicorn, 4 workers, Redis)",
        "",
        "Each user signs in on one connection; 250 ms later the first analytics view goes out",
        "on a new connection, to whichever worker takes it.",
        "",
        "| mode | views | waited on Toucan | p50 ms | p99 ms |",
        "| --- | --- | --- | --- | --- |",
    ]
    for name, row in r.first_view.items():
        lines.append(
            f"| {name} | {row['views']:.0f} | {row['share_waited']:.0%} | "
            f"{row['p50_ms']:.1f} | {row['p99_ms']:.1f} |"
        )
    lines += [
        "",
        "## 3. Stampede: concurrent first requests for one user (gunicorn, 4 workers × 8 threads)",
        "",
        f"Then {r.sizes.later_views} more views of the same user, one at a time, on any worker.",
        "",
        "| variant | N | Toucan calls for the N | calls after the later views |",
        "| --- | --- | --- | --- |",
    ]
    for row in r.stampede:
        lines.append(f"| {row['variant']} | {row['n']} | {row['calls']} | {row['per_lifetime']} |")
    lines += [
        "",
        "## 4. Connection reuse: TCP connections opened per 100 mints",
        "",
        "| integration | connections |",
        "| --- | --- |",
    ]
    for name, count in r.connections.items():
        lines.append(f"| {name} | {count} |")
    lines += [
        "",
        "## 5. Growth: distinct users in the cache",
        "",
        "Default config (SimpleCache with 10,000 entries, no front cache). Identities are",
        "filled through the real cache code with a local stand-in for minting.",
        "",
        "| distinct users | `get_token` for a warm user (µs) | process RSS (MB) | "
        "backend entries | front entries |",
        "| --- | --- | --- | --- | --- |",
    ]
    for row in r.growth:
        lines.append(
            f"| {row['users']:,} | {row['get_token_us']:.1f} | {row['rss_mb']:.1f} | "
            f"{row['backend_entries']:,} | {row['front_entries']:,} |"
        )
    lines += [
        "",
        f"## 6. Refresh-ahead: tokens of {r.sizes.rollover_lifetime} s rolling over for "
        f"{r.sizes.rollover_seconds:.0f} s (Redis, two app instances)",
        "",
        f'A view "waited" when it took at least 80% of the injected {r.latency * 1000:.0f} ms.',
        "",
        "| mode | page views | waited on Toucan | share | mints |",
        "| --- | --- | --- | --- | --- |",
    ]
    for label, row in r.rollover.items():
        lines.append(
            f"| {label} | {row['views']:.0f} | {row['waited']:.0f} | "
            f"{row['share_waited']:.2%} | {row['mints']:.0f} |"
        )
    lines += [
        "",
        "## 7. Your own chat: one question to Toucan's MCP endpoint",
        "",
        "`toucan.ask()` against a hand-written client (the MCP SDK, the user's token copied",
        f"into a header once), alternated, with {r.latency * 1000:.0f} ms injected into every",
        "request. CPU is this thread's (the SDK's event loop runs in the caller's thread).",
        "",
        "| client | MCP HTTP requests | median time (ms) | CPU per question (ms) |",
        "| --- | --- | --- | --- |",
    ]
    for label, row in r.own_chat.items():
        lines.append(
            f"| {label} | {row['requests']:.0f} | {row['median_ms']:.0f} | {row['cpu_ms']:.1f} |"
        )
    lines += [
        "",
        "Requests per question, before this wave and now: 4 and 4 (`initialize`,",
        "`notifications/initialized`, `tools/list`, `tools/call`), for a first question and a",
        "follow-up alike. A tool schema cached per instance was tried and dropped: with it the",
        "follow-up still made 4 requests, because the SDK's `ClientSession` lists the tools",
        "itself after `tools/call` to validate the structured result against the tool's output",
        "schema, in every session that has not listed them, and it offers no public way to",
        "seed or skip that. The target of at most 2 for a follow-up needs the MCP session to",
        "outlive the request (one initialized session per user, kept on a process-wide event",
        "loop shared by the web workers' threads); that is not done here.",
    ]
    lines += [
        "",
        "## Notes",
        "",
        "- **Why the WSGI warm-view targets are missed (measured: see the breakdown table).**",
        "  A warm view does three things the hard-coded page does not: it runs the app's",
        "  `user_loader` and validates the `ToucanUser` it returns (the identity must be derived",
        "  afresh on every request: a cached identity is how one user gets another's token),",
        "  it derives the cache key and looks the token up and sets the `no-store` headers, and",
        "  it builds the escaped script and component tags. Each step is a few tens of µs of",
        "  Python; on a bare test-client page (the breakdown's first row) that is about 1.3×.",
        "  On the realistic page (a layout and a 150-row table) it sits at the edge of the 1.05",
        "  target (between about 1.01 and 1.07 from run to run), and served by gunicorn over",
        "  HTTP it is lost in the noise (below 1 is noise, not a speed-up). What was cut: the",
        "  per-request state is looked up once per helper instead of seven times, the",
        "  in-process default backend keeps token objects (no JSON decode), the attribute",
        "  builder joins escaped parts (kept: the row above shows Markup.format costs more),",
        "  the canonical JSON is computed in one pass.",
        "- **Tail latency.** Under 8 threads of one process, both pages have a p99 of tens of",
        "  milliseconds against a p50 of a fraction of one: the threads wait for the GIL",
        "  (CPython switches every 5 ms), and that wait dominates the tail of any page. The",
        "  earlier 134 ms vs 89 ms came from measuring a cold start: the first views of",
        "  flask_toucan wait for the first mint (50 ms upstream) while 7 more threads queue",
        "  behind them. Measured warm and alternated (the tail table), the ratio is small.",
        "- The refresh-ahead row counts views by duration (≥ 80% of the injected latency), so",
        "  a scheduling stall of the 2-core machine can count as a wait; the test suite checks",
        "  the property itself (`tests/test_redis.py`: no view slower than the injected delay).",
        "- Toucan calls per 1,000 views are the same for both integrations when every view is a",
        "  different user: caching cannot help a user's first view. Calls per user stay at one.",
        "",
    ]
    path = out / "RESULTS.md"
    path.write_text("\n".join(lines))
    return path


def update_readme(results_md: Path, readme: Path) -> bool:
    """Copy the targets table into the README between its markers."""
    start, end = "<!-- targets:start -->", "<!-- targets:end -->"
    text = readme.read_text()
    if start not in text or end not in text:
        return False
    body = results_md.read_text()
    table = body[body.index("## Targets") :].split("\n## ", 1)[0]
    table = table.replace("## Targets", "Targets, from the committed run:", 1).strip()
    before, rest = text.split(start, 1)
    after = rest.split(end, 1)[1]
    readme.write_text(f"{before}{start}\n{table}\n{end}{after}")
    return True


def write_plot(results: Results, out: Path, name: str) -> Path:
    r = results
    fig, axes = plt.subplots(2, 2, figsize=(12, 8))
    ax = axes[0][0]
    names = list(r.hotpath)
    med = [r.hotpath[n]["median"] for n in names]
    err = [
        [m - r.hotpath[n]["p25"] for n, m in zip(names, med, strict=True)],
        [r.hotpath[n]["p75"] - m for n, m in zip(names, med, strict=True)],
    ]
    ax.barh(names, med, xerr=err, color="#4c72b0")
    ax.axvline(1.0, color="black", linewidth=0.8)
    ax.axvline(HOTPATH_TARGET, color="#c44e52", linestyle="--", label=f"target {HOTPATH_TARGET}")
    ax.set_title("Hot-path time ratio vs hard-coded token (lower is better)")
    ax.legend(loc="lower right")
    ax.invert_yaxis()

    ax = axes[0][1]
    users = sorted({row["users"] for row in r.naive_vs_ours})
    width = 0.38
    for i, integ in enumerate(("hand-written", "flask_toucan")):
        vals = [
            next(
                row["calls_per_user"]
                for row in r.naive_vs_ours
                if row["users"] == u and row["integration"] == integ
            )
            for u in users
        ]
        ax.bar([x + i * width for x in range(len(users))], vals, width, label=integ)
    ax.set_xticks([x + width / 2 for x in range(len(users))], [f"{u} users" for u in users])
    ax.set_yscale("log")
    ax.set_title(f"Toucan calls per user ({r.sizes.views} page views)")
    ax.legend()

    ax = axes[1][0]
    variants = list(dict.fromkeys(row["variant"] for row in r.stampede))
    ns = list(dict.fromkeys(row["n"] for row in r.stampede))
    width = 0.8 / len(variants)
    for i, v in enumerate(variants):
        vals = [
            next(row["calls"] for row in r.stampede if row["variant"] == v and row["n"] == n)
            for n in ns
        ]
        ax.bar([x + i * width for x in range(len(ns))], vals, width, label=v)
    ax.set_xticks([x + 0.4 - width / 2 for x in range(len(ns))], [f"N={n}" for n in ns])
    ax.set_yscale("log")
    ax.set_title("Stampede: Toucan calls for N concurrent first requests")
    ax.legend(fontsize=8)

    ax = axes[1][1]
    labels = list(r.rollover)
    ax.bar(labels, [r.rollover[k]["share_waited"] * 100 for k in labels], color="#55a868")
    ax.set_ylabel("% of page views")
    ax.set_title("Views that waited on Toucan (tokens rolling over)")
    fig.suptitle(f"flask_toucan benchmarks — FakeToucan with {r.latency * 1000:.0f} ms latency")
    fig.tight_layout()
    path = out / name
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def command_line() -> str:
    return "python -m benchmarks " + " ".join(sys.argv[1:])
