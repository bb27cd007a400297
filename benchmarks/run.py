"""The benchmark scenarios. Every comparison is measured side by side in one run."""

from __future__ import annotations

import json
import statistics
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests
from flask import Flask
from markupsafe import Markup
from tqdm import tqdm

from flask_toucan import EmbedToken, ToucanUser, markup
from flask_toucan.client import TokenClient
from flask_toucan.testing import FakeToucan
from tests.servers import Gunicorn, RedisClusterSet, RedisSentinelSet, RedisServer

from .app import create_app

API_KEY = "bench-key"


@dataclass
class Sizes:
    """How much work each scenario does; ``quick`` is for the smoke test."""

    rounds: int = 25
    batch: int = 200
    server_rounds: int = 8
    server_batch: int = 200
    views: int = 2000
    users: tuple[int, ...] = (1, 100, 1000)
    stampede: tuple[int, ...] = (10, 100, 500)
    growth: tuple[int, ...] = (1, 1_000, 100_000)
    rollover_lifetime: int = 4
    rollover_seconds: float = 16.0
    later_views: int = 40
    first_views: int = 60
    chat_rounds: int = 12

    @classmethod
    def quick(cls) -> Sizes:
        return cls(
            rounds=3,
            batch=20,
            server_rounds=2,
            server_batch=20,
            views=60,
            users=(1, 10),
            stampede=(5, 20),
            growth=(1, 100, 1000),
            rollover_lifetime=3,
            rollover_seconds=5.0,
            later_views=5,
            first_views=4,
            chat_rounds=2,
        )


@dataclass
class Results:
    latency: float
    sizes: Sizes
    hotpath: dict[str, dict[str, float]] = field(default_factory=dict)
    naive_vs_ours: list[dict[str, Any]] = field(default_factory=list)
    stampede: list[dict[str, Any]] = field(default_factory=list)
    connections: dict[str, int] = field(default_factory=dict)
    growth: list[dict[str, Any]] = field(default_factory=list)
    rollover: dict[str, dict[str, float]] = field(default_factory=dict)
    markup: dict[str, float] = field(default_factory=dict)
    tail: dict[str, dict[str, float]] = field(default_factory=dict)
    costs: dict[str, float] = field(default_factory=dict)
    short_tokens: dict[str, int] = field(default_factory=dict)
    own_chat: dict[str, dict[str, float]] = field(default_factory=dict)
    first_view: dict[str, dict[str, float]] = field(default_factory=dict)
    signals: dict[str, float] = field(default_factory=dict)


def spread(values: list[float]) -> dict[str, float]:
    q = statistics.quantiles(values, n=4) if len(values) > 1 else [values[0]] * 3
    return {"median": statistics.median(values), "p25": q[0], "p75": q[2], "n": len(values)}


def percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * pct / 100))]


@contextmanager
def fake_toucan(latency: float, **kwargs: Any) -> Iterator[FakeToucan]:
    with FakeToucan(api_key=API_KEY, delay=latency, **kwargs) as fake:
        yield fake


def env_for(fake: FakeToucan, **extra: str) -> dict[str, str]:
    return {
        "BENCH_TOUCAN_URL": fake.url,
        "BENCH_TOUCAN_KEY": API_KEY,
        "BENCH_PREFIX": f"bench-{uuid.uuid4().hex[:8]}:",
        **extra,
    }


# -- 1. hot path -----------------------------------------------------------


def interleaved(run_a: Callable[[], float], run_b: Callable[[], float], rounds: int) -> list[float]:
    """Ratios a/b of batch times, measured ABAB so drift hits both sides alike."""
    ratios = []
    for _ in range(rounds):
        a = run_a() + run_a()
        b = run_b() + run_b()
        ratios.append(a / b)
    return ratios


def hotpath_wsgi(
    app: Flask, rounds: int, batch: int, pages: tuple[str, str] = ("/page", "/baseline")
) -> dict[str, float]:
    client = app.test_client()
    client.get("/login/alice")  # Flask-Login's session, used by the realistic pages

    def batch_of(path: str) -> Callable[[], float]:
        def run() -> float:
            started = time.perf_counter()
            for _ in range(batch):
                response = client.get(path)
                assert response.status_code == 200
            return time.perf_counter() - started

        return run

    for path in pages:  # warm-up: token minted, templates compiled
        batch_of(path)()
    return spread(interleaved(batch_of(pages[0]), batch_of(pages[1]), rounds))


def _format_attributes(attrs: Any) -> Markup:
    """The attribute builder written with Markup.format, for the comparison below."""
    html = Markup()
    for name, value in attrs.items():
        if value is None or value is False:
            continue
        html += Markup(" ") + name if value is True else Markup(' {}="{}"').format(name, value)
    return html


COST_STEPS = {
    "user_loader + ToucanUser": "/cost/user",
    "+ cache key, lookup, no-store headers (get_token)": "/cost/token",
    "+ @inject_token": "/cost/decorated",
    "+ toucan_script() and toucan_dashboard() (the full page)": "/page",
}


def cost_breakdown(app: Flask, rounds: int, batch: int) -> dict[str, float]:
    """Microseconds each step adds to the hard-coded page, measured in alternation."""
    client = app.test_client()
    paths = ["/baseline", *COST_STEPS.values()]
    times: dict[str, list[float]] = {path: [] for path in paths}
    for path in paths:
        client.get(path)
    for _ in range(rounds):
        for path in paths:
            started = time.perf_counter()
            for _ in range(batch):
                client.get(path)
            times[path].append((time.perf_counter() - started) / batch * 1e6)
    medians = {path: statistics.median(values) for path, values in times.items()}
    out = {"hard-coded page (µs)": medians["/baseline"]}
    previous = medians["/baseline"]
    for label, path in COST_STEPS.items():
        out[label] = medians[path] - previous
        previous = medians[path]
    return out


def signal_cost(app: Flask, rounds: int, batch: int) -> dict[str, float]:
    """What the signals cost a warm view: with no receivers, and with Prometheus connected."""
    import timeit

    from prometheus_client import CollectorRegistry

    from flask_toucan import signals
    from flask_toucan.metrics import instrument

    checks = 3  # receiver checks on a warm view: served, and the mint's two when it mints
    per_check = min(timeit.repeat("bool(s.receivers)", globals={"s": signals.token_served},
                                  number=100_000, repeat=5)) / 100_000  # fmt: skip
    client = app.test_client()

    def batch_of() -> float:
        started = time.perf_counter()
        for _ in range(batch):
            client.get("/page")
        return time.perf_counter() - started

    batch_of()
    view = min(batch_of() for _ in range(3)) / batch
    plain = [batch_of() for _ in range(rounds)]
    registry = CollectorRegistry()
    instrument(app, registry=registry)
    connected = [batch_of() for _ in range(rounds)]
    return {
        "no_receivers_share": checks * per_check / view,
        "no_receivers_ns": checks * per_check * 1e9,
        "prometheus_ratio": statistics.median(connected) / statistics.median(plain),
    }


def bench_signals(results: Results, bar: tqdm) -> None:
    # Last: it connects receivers that stay connected for the rest of the process.
    with fake_toucan(results.latency) as fake:
        results.signals = signal_cost(
            create_app(env_for(fake)), results.sizes.rounds, results.sizes.batch
        )
    bar.update(1)


def attribute_builder(app: Flask, rounds: int, batch: int) -> dict[str, float]:
    """The same page, with Markup.format's attribute builder against ours (join of escapes)."""
    client = app.test_client()
    ours = markup.html_attributes

    def batch_with(builder: Callable[..., Markup]) -> Callable[[], float]:
        def run() -> float:
            markup.html_attributes = builder
            try:
                started = time.perf_counter()
                for _ in range(batch):
                    assert client.get("/page").status_code == 200
                return time.perf_counter() - started
            finally:
                markup.html_attributes = ours

        return run

    batch_with(ours)()
    return spread(interleaved(batch_with(_format_attributes), batch_with(ours), rounds))


def hotpath_server(url: str, rounds: int, batch: int, clients: int = 4) -> dict[str, float]:
    sessions = [requests.Session() for _ in range(clients)]

    def batch_of(path: str) -> Callable[[], float]:
        def worker(session: requests.Session) -> None:
            for _ in range(batch // clients):
                assert session.get(url + path, timeout=10).status_code == 200

        def run() -> float:
            started = time.perf_counter()
            with ThreadPoolExecutor(clients) as pool:
                list(pool.map(worker, sessions))
            return time.perf_counter() - started

        return run

    for path in ("/page", "/baseline"):
        batch_of(path)()
    return spread(interleaved(batch_of("/page"), batch_of("/baseline"), rounds))


def bench_hotpath(results: Results, redis: RedisServer, bar: tqdm) -> None:
    s = results.sizes
    with fake_toucan(results.latency) as fake:
        configs = {
            "SimpleCache": {},
            "Redis, no front cache": {"BENCH_REDIS_URL": redis.url, "BENCH_FRONT_TTL": "0"},
            "Redis + front cache": {"BENCH_REDIS_URL": redis.url},
        }
        for name, extra in configs.items():
            app = create_app(env_for(fake, **extra))
            results.hotpath[f"WSGI · {name}"] = hotpath_wsgi(app, s.rounds, s.batch)
            bar.update(1)
        app = create_app(env_for(fake))
        results.hotpath["WSGI · realistic page (Flask-Login, layout, table)"] = hotpath_wsgi(
            app, s.rounds, s.batch, ("/realistic", "/realistic-baseline")
        )
        results.markup = attribute_builder(app, s.rounds, s.batch)
        results.costs = cost_breakdown(app, s.rounds, s.batch)
        bar.update(1)
        for name in ("SimpleCache", "Redis + front cache"):
            server = Gunicorn(
                env_for(fake, **configs[name]),
                workers=2,
                threads=4,
                app="benchmarks.app:create_app()",
            )
            try:
                results.hotpath[f"gunicorn · {name}"] = hotpath_server(
                    server.url, s.server_rounds, s.server_batch
                )
            finally:
                server.stop()
            bar.update(1)


# -- 2. against the hand-written integration --------------------------------


def page_views(app: Flask, path: str, users: int, views: int, threads: int = 8) -> list[float]:
    timings: list[float] = []
    lock = threading.Lock()
    plan = [f"user-{i % users}" for i in range(views)]

    def one(user: str) -> None:
        client = app.test_client()
        started = time.perf_counter()
        response = client.get(path, query_string={"user": user})
        elapsed = time.perf_counter() - started
        assert response.status_code == 200
        with lock:
            timings.append(elapsed)

    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(one, plan))
    return timings


def bench_naive_vs_ours(results: Results, bar: tqdm) -> None:
    s = results.sizes
    for users in s.users:
        for name, path in (
            ("hard-coded token", "/baseline"),
            ("hand-written", "/naive"),
            ("flask_toucan", "/page"),
        ):
            with fake_toucan(results.latency) as fake:
                app = create_app(env_for(fake))
                timings = page_views(app, path, users, s.views)
                calls = len(fake.requests)
            results.naive_vs_ours.append(
                {
                    "users": users,
                    "integration": name,
                    "p50_ms": percentile(timings, 50) * 1000,
                    "p99_ms": percentile(timings, 99) * 1000,
                    "calls_per_1000": calls / s.views * 1000,
                    "calls_per_user": calls / users,
                }
            )
            bar.update(1)


def bench_tail(results: Results, bar: tqdm) -> None:
    """p99 of warm views under 8 threads: flask_toucan and the hard-coded page, alternated."""
    s = results.sizes
    with fake_toucan(results.latency) as fake:
        app = create_app(env_for(fake))
        samples: dict[str, list[float]] = {"hard-coded token": [], "flask_toucan": []}
        paths = {"hard-coded token": "/baseline", "flask_toucan": "/page"}
        for path in paths.values():  # warm: token minted, templates compiled, threads started
            page_views(app, path, 1, 200)
        for _ in range(4):
            for name, path in paths.items():
                samples[name] += page_views(app, path, 1, s.views // 4)
        for name, timings in samples.items():
            results.tail[name] = {
                "p50_ms": percentile(timings, 50) * 1000,
                "p99_ms": percentile(timings, 99) * 1000,
                "max_ms": max(timings) * 1000,
            }
    bar.update(1)


def bench_short_tokens(results: Results, bar: tqdm) -> None:
    """5-minute tokens: Toucan calls for one user viewing every 10 s for an hour (moved clock)."""
    from flask_toucan import tokens

    moved = [time.time()]
    real_clock = tokens._clock
    tokens._clock = lambda: moved[0]
    try:
        with fake_toucan(0.0, expires_in="5m") as fake:
            app = create_app(env_for(fake, BENCH_REFRESH_AHEAD="0"))
            client = app.test_client()
            first_lifetime = 0
            for view in range(360):
                assert client.get("/page").status_code == 200
                if view == 22:  # 220 s: the first token is servable for 225 s of its 300
                    first_lifetime = len(fake.mints)
                moved[0] += 10
            results.short_tokens = {
                "views": 360,
                "mints_first_lifetime": first_lifetime,
                "mints_per_hour": len(fake.mints),
            }
    finally:
        tokens._clock = real_clock
    bar.update(1)


def bench_first_view(results: Results, redis: RedisServer, bar: tqdm) -> None:
    """The first analytics view after sign-in (gunicorn, 4 workers, Redis)."""
    s = results.sizes
    modes = [
        ("flask_toucan, prefetch on login", "tests.gunicorn_app:create_app()", "1", "/page"),
        ("flask_toucan, no prefetch", "tests.gunicorn_app:create_app()", "0", "/page"),
        ("hand-written", "benchmarks.app:create_app()", "0", "/naive"),
    ]
    with fake_toucan(results.latency) as fake:
        for name, app_path, prefetch, path in modes:
            env = {
                "TEST_TOUCAN_KEY": API_KEY,
                "TEST_TOUCAN_URL": fake.url,
                "TEST_REDIS_URL": redis.url,
                "TEST_PREFIX": f"first-{uuid.uuid4().hex[:8]}:",
                "TEST_PREFETCH": prefetch,
                **env_for(fake, BENCH_REDIS_URL=redis.url),
            }
            server = Gunicorn(env, workers=4, threads=4, app=app_path)
            timings: list[float] = []
            try:
                for i in range(s.first_views):
                    user = f"first-{uuid.uuid4().hex[:8]}-{i}"
                    session = requests.Session()
                    if path == "/page":
                        session.post(server.url + "/sign-in", params={"user": user}, timeout=10)
                    time.sleep(0.25)  # the redirect after sign-in, and the browser's work
                    started = time.perf_counter()
                    view = requests.get(
                        server.url + path,
                        params={"user": user},
                        cookies=session.cookies,
                        timeout=10,
                    )
                    timings.append(time.perf_counter() - started)
                    assert view.status_code == 200
            finally:
                server.stop()
            waited = sum(t >= results.latency * 0.8 for t in timings)
            results.first_view[name] = {
                "views": len(timings),
                "share_waited": waited / len(timings),
                "p50_ms": percentile(timings, 50) * 1000,
                "p99_ms": percentile(timings, 99) * 1000,
            }
            bar.update(1)


# -- 3. stampede -------------------------------------------------------------


def fire(url: str, n: int, user: str) -> None:
    barrier = threading.Barrier(n)

    def one(_: int) -> int:
        barrier.wait()
        return requests.get(url, params={"user": user}, timeout=60).status_code

    with ThreadPoolExecutor(n) as pool:
        statuses = list(pool.map(one, range(n)))
    assert statuses == [200] * n, statuses


def bench_stampede(results: Results, redis: RedisServer, bar: tqdm) -> None:
    s = results.sizes
    sentinel, cluster = RedisSentinelSet().start(), RedisClusterSet().start()
    shared = {
        "Redis": {"BENCH_REDIS_URL": redis.url},
        "Sentinel": {"BENCH_CACHE_CONFIG": json.dumps(sentinel.cache_config)},
        "Cluster": {"BENCH_CACHE_CONFIG": json.dumps(cluster.cache_config)},
    }
    variants = [
        ("hand-written", "/naive", {}),
        ("flask_toucan, per-process cache", "/page", {}),
        *((f"flask_toucan, {k} single-flight", "/page", v) for k, v in shared.items()),
    ]
    try:
        with fake_toucan(results.latency) as fake:
            for name, path, extra in variants:
                server = Gunicorn(
                    env_for(fake, **extra), workers=4, threads=8, app="benchmarks.app:create_app()"
                )
                try:
                    for n in s.stampede:
                        before = len(fake.requests)
                        user = f"stampede-{uuid.uuid4().hex[:6]}"
                        fire(server.url + path, n, user)
                        calls = len(fake.requests) - before
                        # Then more views of that user, on any worker, within the lifetime.
                        for _ in range(s.later_views):
                            requests.get(server.url + path, params={"user": user}, timeout=60)
                        per_lifetime = len(fake.requests) - before
                        results.stampede.append(
                            {"variant": name, "n": n, "calls": calls, "per_lifetime": per_lifetime}
                        )
                        bar.update(1)
                finally:
                    server.stop()
    finally:
        sentinel.stop()
        cluster.stop()


# -- 4. connection reuse ------------------------------------------------------


def bench_connections(results: Results, bar: tqdm) -> None:
    user = ToucanUser("conn", attributes={"tenant": "t"})
    with fake_toucan(0.0) as fake:
        for _ in range(100):
            requests.post(
                fake.url + "/embed/generate-token",
                json=user.to_payload(),
                headers={"x-api-key": API_KEY},
                timeout=10,
            ).raise_for_status()
        results.connections["hand-written (requests.post)"] = fake.connections
    with fake_toucan(0.0) as fake:
        client = TokenClient(fake.url, API_KEY)
        for _ in range(100):
            client.mint(user)
        results.connections["flask_toucan (TokenClient)"] = fake.connections
    bar.update(1)


# -- 5. growth ---------------------------------------------------------------


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    import resource

    return pages * resource.getpagesize() / 2**20


def bench_growth(results: Results, bar: tqdm) -> None:
    with fake_toucan(0.0) as fake:
        app = create_app(env_for(fake))
        state = app.extensions["toucan"].service
        toucan = app.extensions["bench_toucan"]
        backend = state.store.backend
        filled = 0
        warm = ToucanUser("user-0", attributes={"tenant": "t-user-0", "region": "EU"})
        for target in results.sizes.growth:
            # Fill with distinct identities through the real cache code; minting is
            # a local stand-in here (100,000 HTTP mints would dominate the run).
            with app.app_context():
                while filled < target:
                    user = ToucanUser(f"user-{filled}", attributes={"tenant": f"t-{filled}"})
                    state.store.put(
                        state.key_for(state.resolve(user)),
                        EmbedToken.from_lifetime("tok", 3600, time.time()),
                    )
                    filled += 1
                toucan.get_token(warm)
                n = 20_000
                started = time.perf_counter()
                for _ in range(n):
                    toucan.get_token(warm)
                cost = (time.perf_counter() - started) / n
            results.growth.append(
                {
                    "users": target,
                    "get_token_us": cost * 1e6,
                    "rss_mb": rss_mb(),
                    "backend_entries": len(backend),
                    "front_entries": len(state.store.front or []),
                }
            )
            bar.update(1)


# -- 6. refresh-ahead --------------------------------------------------------


def bench_rollover(results: Results, redis: RedisServer, bar: tqdm) -> None:
    s = results.sizes
    for label, share in (("refresh-ahead 0.5", "0.5"), ("refresh-ahead off", "0")):
        with fake_toucan(results.latency, expires_in=s.rollover_lifetime) as fake:
            env = env_for(
                fake, BENCH_REDIS_URL=redis.url, BENCH_REFRESH_AHEAD=share, BENCH_MIN_TTL="1"
            )
            clients = [create_app(env).test_client() for _ in range(2)]
            clients[0].get("/page")
            waited = views = 0
            deadline = time.monotonic() + s.rollover_seconds
            while time.monotonic() < deadline:
                started = time.perf_counter()
                assert clients[views % 2].get("/page").status_code == 200
                if time.perf_counter() - started >= results.latency * 0.8:
                    waited += 1
                views += 1
                time.sleep(0.005)
            results.rollover[label] = {
                "views": views,
                "waited": waited,
                "share_waited": waited / views,
                "mints": len(fake.mints),
            }
        bar.update(1)


# -- 8. your own chat: a question to Toucan's MCP endpoint -----------------------------


def _mcp_requests(fake: FakeToucan) -> int:
    return sum(1 for r in fake.requests if r.path == "/api/mcp")


def bench_own_chat(results: Results, bar: tqdm) -> None:
    """A question to Toucan's assistant through ``toucan.ask`` against a hand-written
    client (the MCP SDK with the token copied into a header), alternated, with the
    latency injected into every request: requests, wall time and this thread's CPU."""
    import anyio
    from mcp.client.session import ClientSession
    from mcp.client.streamable_http import streamable_http_client

    from flask_toucan import Toucan
    from flask_toucan.mcp import http

    user = ToucanUser("bench-chat", attributes={"tenant": "acme"})
    samples: dict[str, dict[str, list[float]]] = {}

    def record(name: str, seconds: float, cpu: float, requests_: int) -> None:
        row = samples.setdefault(name, {"seconds": [], "cpu": [], "requests": []})
        row["seconds"].append(seconds)
        row["cpu"].append(cpu)
        row["requests"].append(requests_)

    with fake_toucan(results.latency) as fake:
        app = Flask(__name__)
        app.config.update(TOUCAN_API_KEY=API_KEY, TOUCAN_BASE_URL=fake.url)
        toucan = Toucan(app)
        with app.app_context():
            token = toucan.get_token(user).value  # warm: the mint is not what is measured

        def ours(label: str, thread_id: str | None) -> str | None:
            before = _mcp_requests(fake)
            started, cpu = time.perf_counter(), time.thread_time()
            with app.app_context():
                answer = toucan.ask("What sold best?", thread_id=thread_id, user=user)
            record(label, time.perf_counter() - started, time.thread_time() - cpu,
                   _mcp_requests(fake) - before)  # fmt: skip
            return answer.thread_id

        async def by_hand() -> None:
            headers = {"Authorization": f"Bearer {token}"}
            async with (
                http.AsyncClient(headers=headers) as client,
                streamable_http_client(fake.mcp_url, http_client=client) as streams,
                ClientSession(streams[0], streams[1]) as session,
            ):
                await session.initialize()
                await session.call_tool("ask_toucan_assistant", {"question": "What sold best?"})

        def hand_written() -> None:
            before = _mcp_requests(fake)
            started, cpu = time.perf_counter(), time.thread_time()
            anyio.run(by_hand)
            record("hand-written (token copied into a header)",
                   time.perf_counter() - started, time.thread_time() - cpu,
                   _mcp_requests(fake) - before)  # fmt: skip

        for _ in range(results.sizes.chat_rounds):
            thread = ours("flask_toucan, first question", None)
            hand_written()
            ours("flask_toucan, follow-up (same user, thread id)", thread)
    results.own_chat = {
        name: {
            "requests": statistics.median(row["requests"]),
            "median_ms": statistics.median(row["seconds"]) * 1000,
            "cpu_ms": statistics.median(row["cpu"]) * 1000,
        }
        for name, row in samples.items()
    }
    bar.update(1)


def run_all(latency: float, sizes: Sizes, out: Path) -> Results:
    results = Results(latency=latency, sizes=sizes)
    steps = 13 + 3 * len(sizes.users) + 5 * len(sizes.stampede) + 1 + len(sizes.growth) + 2
    redis = RedisServer().start()
    try:
        with tqdm(total=steps, desc="benchmarks", unit="step") as bar:
            bench_connections(results, bar)
            bench_hotpath(results, redis, bar)
            bench_naive_vs_ours(results, bar)
            bench_tail(results, bar)
            bench_short_tokens(results, bar)
            bench_stampede(results, redis, bar)
            bench_first_view(results, redis, bar)
            bench_growth(results, bar)
            bench_rollover(results, redis, bar)
            bench_signals(results, bar)
            bench_own_chat(results, bar)
    finally:
        redis.stop()
    return results
