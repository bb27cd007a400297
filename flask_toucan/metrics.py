"""Prometheus metrics for flask_toucan, built on its signals (extra ``flask-toucan[prometheus]``).

>>> from flask_toucan.metrics import instrument
>>> instrument(app)            # the default registry; or instrument(app, registry=...)

Registers:

* ``toucan_mints_total{outcome}``: ``ok`` or the error class (``ToucanUnavailable``...);
* ``toucan_mint_duration_seconds``: a histogram of mint durations, failures included;
* ``toucan_tokens_served_total{source}``: ``request``, ``front``, ``shared``, ``minted``,
  ``stale`` (see :mod:`flask_toucan.signals`);
* ``toucan_refresh_requests_total{status}``: the refresh endpoint's answers.

Under gunicorn, use prometheus_client's multiprocess mode (``PROMETHEUS_MULTIPROC_DIR``
set before the workers start, and a ``MultiProcessCollector`` where you expose
``/metrics``): these are plain counters and a histogram, which it aggregates.
"""

from __future__ import annotations

import weakref
from typing import Any

from flask import Flask

from . import signals

try:
    from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram
except ImportError as exc:  # pragma: no cover - exercised by the import itself
    raise ImportError(
        "flask_toucan.metrics needs prometheus_client: pip install 'flask-toucan[prometheus]'"
    ) from exc

__all__ = ["instrument"]

# One set of metrics per registry: instrumenting a second app must not register twice.
_metrics: dict[int, tuple[Counter, Histogram, Counter, Counter]] = {}


def _for(registry: CollectorRegistry) -> tuple[Counter, Histogram, Counter, Counter]:
    found = _metrics.get(id(registry))
    if found is None:
        found = _metrics[id(registry)] = (
            Counter("toucan_mints_total", "Token mints by outcome", ["outcome"], registry=registry),
            Histogram(
                "toucan_mint_duration_seconds",
                "Seconds a mint took, failures included",
                registry=registry,
                buckets=(0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            ),
            Counter(
                "toucan_tokens_served_total",
                "Tokens handed out, by where they came from",
                ["source"],
                registry=registry,
            ),
            Counter(
                "toucan_refresh_requests_total",
                "Refresh endpoint answers by HTTP status",
                ["status"],
                registry=registry,
            ),
        )
    return found


#: The registries each app is already counted in.
_INSTRUMENTED: weakref.WeakKeyDictionary[Flask, set[int]] = weakref.WeakKeyDictionary()


def instrument(app: Flask, registry: CollectorRegistry | None = None) -> None:
    """Count ``app``'s mints, serves and refreshes in ``registry`` (default: the global one).

    Calling it again for the same app and registry changes nothing (no event is counted
    twice).
    """
    registry = registry or REGISTRY
    done = _INSTRUMENTED.setdefault(app, set())
    if id(registry) in done:
        return
    done.add(id(registry))
    mints, durations, served, refreshes = _for(registry)

    def on_minted(sender: Flask, duration: float, **extra: Any) -> None:
        mints.labels(outcome="ok").inc()
        durations.observe(duration)

    def on_failed(sender: Flask, duration: float, error: str, **extra: Any) -> None:
        mints.labels(outcome=error).inc()
        durations.observe(duration)

    def on_served(sender: Flask, source: str, **extra: Any) -> None:
        served.labels(source=source).inc()

    def on_refreshed(sender: Flask, status: int, **extra: Any) -> None:
        refreshes.labels(status=str(status)).inc()

    signals.token_minted.connect(on_minted, app, weak=False)
    signals.mint_failed.connect(on_failed, app, weak=False)
    signals.token_served.connect(on_served, app, weak=False)
    signals.token_refreshed.connect(on_refreshed, app, weak=False)
