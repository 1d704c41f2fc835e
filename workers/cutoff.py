"""Cutting a run's HTTP connections: at its deadline, when its worker stops, or its lease is lost.

Timeouts of ``requests`` apply per socket operation, so a PACS or model that trickles a byte
every few seconds never meets them. A :class:`Cutoff` bounds a run in wall-clock time instead:
while it is entered (in the run's thread), every connection that thread takes from a session
prepared by :func:`cut_with_runs` is registered with it, and when the cutoff fires (a timer at
its deadline, or :meth:`Cutoff.cut` from another thread) those sockets are shut down. The call
blocked on them returns at once with an error, and later requests of the run fail before they
connect; the run then reads :attr:`Cutoff.reason` to say why it stopped.
"""

from __future__ import annotations

import contextlib
import contextvars
import socket
import threading
import time
import weakref
from enum import Enum
from typing import Any

import requests
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import ConnectTimeoutError

__all__ = ["CutReason", "Cutoff", "cut_with_runs"]


class CutReason(Enum):
    """Why a run's connections were cut."""

    DEADLINE = "deadline"  # the job ran past its time limit
    HANDED_BACK = "handed_back"  # the worker is stopping and gives the job back
    LEASE_LOST = "lease_lost"  # another worker holds the job now


_current: contextvars.ContextVar[Cutoff | None] = contextvars.ContextVar(
    "model_proxy_cutoff", default=None
)


class Cutoff:
    """The wall-clock limit of one run and the connections it may cut; enter it in the run's
    thread (once) for the time the run makes HTTP calls."""

    def __init__(self, seconds: float) -> None:
        self.deadline = time.monotonic() + seconds
        self.reason: CutReason | None = None
        self._cut = threading.Event()
        self._lock = threading.Lock()
        self._held: set[HTTPConnection] = set()
        self._timer: threading.Timer | None = None
        self._token: contextvars.Token[Cutoff | None] | None = None

    def time_left(self) -> float:
        return self.deadline - time.monotonic()

    @property
    def is_cut(self) -> bool:
        """Cut already, or past the deadline (the timer may not have fired yet)."""
        return self._cut.is_set() or self.time_left() <= 0

    def why(self) -> CutReason | None:
        """The reason of the cut; ``DEADLINE`` once the deadline has passed; else None."""
        if self.reason is None and self.time_left() <= 0:
            return CutReason.DEADLINE
        return self.reason

    def cut(self, reason: CutReason) -> None:
        """Shut down every connection the run holds now; refuse it new ones. The first reason
        given is kept."""
        with self._lock:
            if self.reason is None:
                self.reason = reason
            self._cut.set()
            for conn in self._held:
                _shut_down(conn)

    def wait(self, seconds: float) -> bool:
        """Sleep up to ``seconds``; True (at once) when the run is cut meanwhile."""
        return self._cut.wait(max(seconds, 0.0)) or self.is_cut

    def __enter__(self) -> Cutoff:
        self._token = _current.set(self)
        self._timer = threading.Timer(max(self.time_left(), 0.0), self.cut, (CutReason.DEADLINE,))
        self._timer.daemon = True
        self._timer.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._timer is not None:
            self._timer.cancel()
        if self._token is not None:
            _current.reset(self._token)
        with self._lock:
            self._held.clear()

    # -- called by the connection pools, in the run's thread ---------------------------------

    def _hold(self, conn: HTTPConnection) -> bool:
        """Hold ``conn`` for the run; False (and not held) when the run is cut already."""
        with self._lock:
            if self._cut.is_set():
                return False
            self._held.add(conn)
            return True

    def _release(self, conn: HTTPConnection) -> None:
        with self._lock:
            self._held.discard(conn)


def _shut_down(conn: HTTPConnection) -> None:
    # http.client hands the socket of an answer framed by closing the connection over to the
    # answer and sets ``conn.sock`` to None; the socket remembered at connect still reaches it
    sock = getattr(conn, "sock", None) or getattr(conn, "cutoff_socket", None)
    if sock is None:
        return
    with contextlib.suppress(OSError):
        # the plain socket's shutdown, also under TLS: it wakes a thread blocked in a read
        socket.socket.shutdown(sock, socket.SHUT_RDWR)


_REFUSED = "the run was cut off: no new connection"


class _CutoffPool:
    """Mixed into urllib3's pools: connections taken under a :class:`Cutoff` are held by it."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._holders: weakref.WeakKeyDictionary[HTTPConnection, Cutoff] = (
            weakref.WeakKeyDictionary()
        )
        self._holders_lock = threading.Lock()

    def _get_conn(self, timeout: float | None = None) -> Any:
        cutoff = _current.get()
        if cutoff is not None and cutoff.is_cut:
            raise ConnectTimeoutError(_REFUSED)
        conn = super()._get_conn(timeout)  # type: ignore[misc]
        if cutoff is not None:
            if not cutoff._hold(conn):
                super()._put_conn(conn)  # type: ignore[misc]
                raise ConnectTimeoutError(_REFUSED)
            with self._holders_lock:
                self._holders[conn] = cutoff
        return conn

    def _put_conn(self, conn: Any) -> None:
        if conn is not None:
            with self._holders_lock:
                cutoff = self._holders.pop(conn, None)
            if cutoff is not None:
                cutoff._release(conn)
        super()._put_conn(conn)  # type: ignore[misc]


class _RememberedSocket:
    """Mixed into urllib3's connections: the socket of the latest connect, kept for a cut."""

    cutoff_socket: socket.socket | None = None

    def connect(self) -> None:
        super().connect()  # type: ignore[misc]
        self.cutoff_socket = getattr(self, "sock", None)


class _CutoffHTTPConnection(_RememberedSocket, HTTPConnection):
    pass


class _CutoffHTTPSConnection(_RememberedSocket, HTTPSConnection):
    pass


class _CutoffHTTPPool(_CutoffPool, HTTPConnectionPool):
    ConnectionCls = _CutoffHTTPConnection


class _CutoffHTTPSPool(_CutoffPool, HTTPSConnectionPool):
    ConnectionCls = _CutoffHTTPSConnection


_POOL_CLASSES = {"http": _CutoffHTTPPool, "https": _CutoffHTTPSPool}


def cut_with_runs(session: requests.Session) -> requests.Session:
    """Let the :class:`Cutoff` of the calling thread's run cut ``session``'s connections.

    Call it before the session's first request (its pools are made on first use).
    """
    for adapter in session.adapters.values():
        manager = getattr(adapter, "poolmanager", None)
        if manager is not None:
            manager.pool_classes_by_scheme = dict(_POOL_CLASSES)
    return session
