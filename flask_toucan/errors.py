"""The exceptions flask_toucan raises.

The ones that reach a browser subclass werkzeug's HTTP exceptions, so
``@app.errorhandler(ToucanUnavailable)`` (or ``503``) works and an unhandled one
becomes a plain 502/503 page that never carries Toucan's own response body.
"""

from __future__ import annotations

from werkzeug.exceptions import (
    BadGateway,
    Forbidden,
    HTTPException,
    ServiceUnavailable,
    Unauthorized,
)

__all__ = [
    "InvalidToucanUser",
    "InvalidVariant",
    "ToucanAPIError",
    "ToucanAuthError",
    "ToucanConfigError",
    "ToucanError",
    "ToucanForbidden",
    "ToucanRateLimited",
    "ToucanResponseError",
    "ToucanUnavailable",
    "ToucanUserRequired",
]


class ToucanError(Exception):
    """Base class of every flask_toucan error."""


class ToucanConfigError(ToucanError, RuntimeError):
    """The app's configuration is wrong; the message names the key to change."""


class InvalidToucanUser(ToucanError, ValueError):
    """A user description that cannot be sent to Toucan; the message says why.

    A programming error in the app's ``user_loader`` (a 500 with a clear log
    line), never something a browser can cause.
    """


class InvalidVariant(ToucanError):
    """A page's variant reference that cannot be renewed for this user (403 on refresh).

    ``code`` is machine-readable: ``variant_invalid`` (not signed by this app, or no
    such variant), ``variant_expired`` (older than ``variants.MAX_AGE``) or
    ``access_revoked`` (another identity's, or ``allow()`` said no).
    """

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class ToucanForbidden(ToucanError, Forbidden):
    """``inject_token(allow=...)`` refused the current user this page (403)."""

    description = "You do not have access to these analytics."

    def __init__(self, description: str | None = None) -> None:
        Forbidden.__init__(self, description)


class ToucanUserRequired(ToucanError, Unauthorized):
    """A token was needed but the ``user_loader`` found no signed-in user (401)."""

    description = "Sign in to see analytics."

    def __init__(self, description: str | None = None) -> None:
        Unauthorized.__init__(self, description)


class ToucanAPIError(ToucanError, HTTPException):
    """Toucan's token endpoint could not give us a token.

    ``str()`` and the HTTP response carry only our own wording, never the body
    or headers Toucan answered with (they are logged, truncated, instead).
    """

    code = 502
    description = "Analytics are unavailable right now."
    #: Seconds until flask_toucan tries Toucan again for this identity (its failure
    #: back-off); the refresh endpoint sends it as ``Retry-After``.
    retry_in: float | None = None

    def __init__(self, message: str, *, upstream_status: int | None = None) -> None:
        HTTPException.__init__(self, self.description)
        self.message = message
        self.upstream_status = upstream_status

    def __str__(self) -> str:
        return self.message

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r})"

    def again(self, retry_in: float) -> ToucanAPIError:
        """This error, raised anew for a caller within its back-off: a copy (each caller
        its own traceback) saying how long the back-off has left."""
        clone = type(self).__new__(type(self))
        clone.__dict__.update(self.__dict__)
        clone.retry_in = retry_in
        return clone


class ToucanAuthError(ToucanAPIError, BadGateway):
    """Toucan refused the API key (401/403): a server configuration problem."""

    code = 502


class ToucanResponseError(ToucanAPIError, BadGateway):
    """Toucan answered, but not with a usable token."""

    code = 502


class ToucanUnavailable(ToucanAPIError, ServiceUnavailable):
    """Toucan could not be reached, timed out or failed (5xx), retries included."""

    code = 503
    # werkzeug's 503 would send this as Retry-After; Toucan's hint stays server-side.
    retry_after = None


class ToucanRateLimited(ToucanUnavailable):
    """Toucan kept answering 429. ``upstream_retry_after``: its hint in seconds, if any.

    (Not werkzeug's ``retry_after``, which would copy the hint into the response.)
    """

    code = 503

    def __init__(
        self,
        message: str,
        *,
        upstream_status: int | None = 429,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message, upstream_status=upstream_status)
        self.upstream_retry_after = retry_after


def describe(value: object) -> str:
    """``repr(value)`` cut to 40 characters, for messages about a wrong value."""
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."
