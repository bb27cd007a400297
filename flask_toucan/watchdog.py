"""The mint deadline's enforcer: closes a token request's sockets once its time is up.

urllib3's timeouts bound each socket operation (connect, one read), not a whole
request: an upstream that sends one byte of its status line or headers every
second never trips a 10-second read timeout, and holds the worker thread for as
long as it likes. No library offers a wall-clock limit for a blocking request, so
flask_toucan keeps one daemon thread per process (started at the first real mint,
never in preview mode) that shuts down the sockets of any token request still
running at its deadline. The blocked ``recv`` then returns, urllib3 raises, and the
caller gets ``ToucanUnavailable`` naming ``TOUCAN_MINT_DEADLINE``.

A thread was chosen over signals (``SIGALRM`` works only in the main thread, which
a threaded server's requests are not in) and over running each request in a worker
thread (the caller would return while the request kept a connection busy).
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
from collections.abc import Iterator

from urllib3.connection import HTTPConnection, HTTPSConnection

__all__ = ["WATCHDOG", "Watchdog", "WatchedHTTPConnection", "WatchedHTTPSConnection"]


class _Mint:
    __slots__ = ("deadline", "expired", "sockets")

    def __init__(self, deadline: float) -> None:
        self.deadline = deadline
        self.sockets: list[socket.socket] = []
        self.expired = False


class Watchdog:
    """Shuts down the sockets of token requests that outlive their deadline."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._mints: dict[int, _Mint] = {}  # by thread: one mint in flight per thread
        self._started = False
        os.register_at_fork(after_in_child=self._after_fork)

    def _after_fork(self) -> None:
        self._cond = threading.Condition()
        self._mints = {}
        self._started = False

    @contextlib.contextmanager
    def guard(self, deadline: float) -> Iterator[_Mint]:
        """Watch the sockets this thread opens or reuses until ``deadline`` (monotonic)."""
        mint = _Mint(deadline)
        with self._cond:
            self._ensure_thread()
            self._mints[threading.get_ident()] = mint
            self._cond.notify()
        try:
            yield mint
        finally:
            with self._cond:
                self._mints.pop(threading.get_ident(), None)
            for dup in mint.sockets:
                dup.close()

    def watch(self, sock: socket.socket) -> None:
        """Called by the connections below for every socket a guarded request uses."""
        with self._cond:
            mint = self._mints.get(threading.get_ident())
            if mint is None:
                return
            # A duplicate of the descriptor: TLS wrapping detaches the original socket
            # object, and shutting down any descriptor of a socket ends it for all.
            try:
                dup = socket.fromfd(sock.fileno(), sock.family, sock.type)
            except OSError:
                return
            mint.sockets.append(dup)
            if mint.expired:
                _shut(dup)

    def _ensure_thread(self) -> None:
        # Threads do not survive a fork: each gunicorn worker starts its own.
        if not self._started:
            self._started = True
            threading.Thread(target=self._run, name="toucan-watchdog", daemon=True).start()

    def _run(self) -> None:
        with self._cond:
            while True:
                current = time.monotonic()
                upcoming = []
                for mint in self._mints.values():
                    if mint.expired:
                        continue
                    if mint.deadline <= current:
                        mint.expired = True
                        for sock in mint.sockets:
                            _shut(sock)
                    else:
                        upcoming.append(mint.deadline)
                self._cond.wait(timeout=min(upcoming) - current if upcoming else None)

    def __len__(self) -> int:
        return len(self._mints)


def _shut(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)


WATCHDOG = Watchdog()


class WatchedHTTPConnection(HTTPConnection):
    """urllib3's connection, reporting its socket to the watchdog (through its public
    ``connect``, ``request`` and ``sock``: nothing private of urllib3)."""

    def connect(self) -> None:
        super().connect()
        if self.sock is not None:
            WATCHDOG.watch(self.sock)

    def request(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        if self.sock is not None:  # a kept-alive connection, reused
            WATCHDOG.watch(self.sock)
        super().request(*args, **kwargs)


class WatchedHTTPSConnection(HTTPSConnection):
    """The same for TLS. urllib3 offers no public hook between the TCP connect and the
    handshake, so a stalled handshake is not cut here: the handshake is bounded by the
    connect timeout, and the caller by the future it waits on (``TokenClient``)."""

    def connect(self) -> None:
        super().connect()
        if self.sock is not None:
            WATCHDOG.watch(self.sock)

    def request(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        if self.sock is not None:  # a kept-alive connection, reused
            WATCHDOG.watch(self.sock)
        super().request(*args, **kwargs)
