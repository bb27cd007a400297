"""pytest plugin (registered through the ``pytest11`` entry point): the ``fake_toucan`` fixture."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from .testing import FakeToucan


@pytest.fixture
def fake_toucan() -> Iterator[FakeToucan]:
    """A running :class:`~flask_toucan.testing.FakeToucan`.

    Point ``TOUCAN_BASE_URL`` at ``fake_toucan.url`` and ``TOUCAN_API_KEY`` at
    ``fake_toucan.api_key``; ``fake_toucan.requests`` records what was asked.
    """
    with FakeToucan() as fake:
        yield fake
