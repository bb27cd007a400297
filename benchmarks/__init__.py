"""Benchmarks: what flask_toucan costs and saves against the hand-written integration.

Run ``python -m benchmarks`` (or ``tox -e bench``); see ``benchmarks/RESULTS.md``.
"""
