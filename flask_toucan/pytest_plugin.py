"""pytest plugin (registered through the ``pytest11`` entry point): the ``fake_toucan`` fixture."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from .testing import FakeToucan


@pytest.fixture
def fake_toucan() -> Iterator[FakeToucan]:
    """A running :class:`~flask_toucan.testing.FakeToucan`.

    Point ``TOUCAN_BASE_URL`` at ``fake_toucan.url`` and ``TOUCAN_API_KEY`` at
    ``fake_toucan.api_key``; ``fake_toucan.requests`` records what was asked.
    """
    # Imported when the fixture is used: a session that never uses it starts no server
    # code (werkzeug's server, the MCP SDK, uvicorn) in every test run of the app.
    from .testing import FakeToucan

    with FakeToucan() as fake:
        yield fake
