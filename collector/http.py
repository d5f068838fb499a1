"""The collector's HTTP endpoint: ``/healthz``, ``/metrics``, ``/api/status``.

Built on ``asyncio.start_server`` with a deliberately small HTTP/1.1 subset (GET and
HEAD, no keep-alive, bounded request size): three read-only pages for Prometheus, a load
balancer and ``schoolnet status`` do not justify a web framework as a dependency.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

log = logging.getLogger("schoolnet.collector.http")

MAX_REQUEST_BYTES = 8192
REQUEST_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class Response:
    """What a route returns."""

    status: int
    body: bytes
    content_type: str = "text/plain; charset=utf-8"


Route = Callable[[], Response | Awaitable[Response]]

_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed",
            408: "Request Timeout", 503: "Service Unavailable"}


def text(status: int, body: str) -> Response:
    """A plain-text response."""
    return Response(status, body.encode())


def json_response(status: int, doc: object) -> Response:
    """A JSON response."""
    return Response(status, json.dumps(doc, indent=1, sort_keys=True).encode() + b"\n",
                    "application/json")


class HttpServer:
    """Serves a fixed table of GET routes on one host and port (port 0: any free one)."""

    def __init__(self, host: str, port: int, routes: dict[str, Route]) -> None:
        self.host = host
        self.port = port
        self.routes = routes
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        """Listen; afterwards ``port`` is the real port."""
        self._server = await asyncio.start_server(self._serve, self.host, self.port,
                                                  limit=MAX_REQUEST_BYTES)
        self.port = self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        """Stop listening and close open connections."""
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2)
            self._server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            resp, head = await self._respond(reader)
            reason = _REASONS.get(resp.status, "")
            headers = (f"HTTP/1.1 {resp.status} {reason}\r\n"
                       f"Content-Type: {resp.content_type}\r\n"
                       f"Content-Length: {len(resp.body)}\r\n"
                       "Cache-Control: no-store\r\nConnection: close\r\n\r\n")
            writer.write(headers.encode() + (b"" if head else resp.body))
            await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        except Exception:  # a broken route must not take the server down
            log.exception("HTTP handler failed")
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _respond(self, reader: asyncio.StreamReader) -> tuple[Response, bool]:
        try:
            raw = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), REQUEST_TIMEOUT_S)
        except TimeoutError:
            return text(408, "request timeout\n"), False
        except (asyncio.LimitOverrunError, asyncio.IncompleteReadError, ValueError):
            return text(400, "bad request\n"), False
        parts = raw.split(b"\r\n", 1)[0].decode("latin-1").split(" ")
        if len(parts) != 3:
            return text(400, "bad request\n"), False
        method, target = parts[0], parts[1].split("?", 1)[0]
        if method not in ("GET", "HEAD"):
            return text(405, "only GET and HEAD\n"), False
        route = self.routes.get(target)
        if route is None:
            return text(404, f"no such page; try {', '.join(sorted(self.routes))}\n"), False
        resp = route()
        if not isinstance(resp, Response):
            resp = await resp
        return resp, method == "HEAD"
