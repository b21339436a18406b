"""uvicorn HTTP protocols that set TCP_NODELAY on every accepted connection.

uvicorn leaves Nagle's algorithm on with more than one worker (uvicorn#3149), which
stalls small keep-alive responses for ~40 ms; these protocols turn it off.
"""

from __future__ import annotations

import asyncio
import socket

from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol


def _nodelay(transport: asyncio.BaseTransport) -> None:
    sock = transport.get_extra_info("socket")
    if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class NoDelayHttpToolsProtocol(HttpToolsProtocol):
    """httptools protocol with TCP_NODELAY."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        """Disable Nagle, then proceed as usual."""
        _nodelay(transport)
        super().connection_made(transport)


class NoDelayH11Protocol(H11Protocol):
    """h11 protocol with TCP_NODELAY."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        """Disable Nagle, then proceed as usual."""
        _nodelay(transport)
        super().connection_made(transport)
