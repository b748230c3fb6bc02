"""ASGI guards that answer before anything parses a request: the body limit, and without API keys the
loopback-only rule (loopback Host names, no foreign Origin), with JSON errors safe for hostile input."""

from __future__ import annotations

import ipaddress
import json
from typing import Any
from urllib.parse import urlsplit

from fastapi.responses import JSONResponse

from flywheel.errors import PayloadTooLarge


class SafeJSON(JSONResponse):
    """JSON escaped to ASCII: an error that echoes hostile input (a lone surrogate) still encodes."""

    def render(self, content: Any) -> bytes:
        return json.dumps(content, ensure_ascii=True, separators=(",", ":")).encode("ascii")


def error_response(status: int, message: str) -> JSONResponse:
    """The API's error body, `{"detail": message}`."""
    return SafeJSON({"detail": message}, status_code=status)


class BodyLimit:
    """ASGI middleware: refuse a request body over `limit` bytes with 413 before anything parses it."""

    def __init__(self, app: Any, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["method"] not in ("POST", "PUT", "PATCH"):
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.limit:
            await self._refuse(scope, receive, send, f"request body is {int(declared)} bytes")
            return
        try:
            body = await read_body(receive, self.limit)
        except PayloadTooLarge:
            await self._refuse(scope, receive, send, "request body is too large")
            return
        if body is not None:  # None: the client went away
            await self.app(scope, replay(body, receive), send)

    async def _refuse(self, scope: dict[str, Any], receive: Any, send: Any, what: str) -> None:
        message = f"{what}; the limit is {self.limit} bytes (max_body_bytes): send smaller batches"
        await error_response(413, message)(scope, receive, send)


async def read_body(receive: Any, limit: int | None = None) -> bytes | None:
    """A request's whole body from its ASGI messages; None if the client disconnected first.

    Raises:
        PayloadTooLarge: the body grew past `limit` bytes (reading stops there).
    """
    body = bytearray()
    more = True
    while more:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        body += message.get("body", b"")
        more = message.get("more_body", False)
        if limit is not None and len(body) > limit:
            raise PayloadTooLarge(f"request body is over {limit} bytes")
    return bytes(body)


def replay(body: bytes, receive: Any) -> Any:
    """An ASGI receive that hands on a body already read, whole, then the connection's own messages."""
    replayed = False

    async def receive_again() -> dict[str, Any]:
        nonlocal replayed
        if not replayed:
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return receive_again


def is_loopback_name(host: str) -> bool:
    """`localhost`, a name under `.localhost`, or a loopback address (127.0.0.0/8, ::1); port not included."""
    name = host.strip().lower().rstrip(".").removeprefix("[").removesuffix("]")
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def host_name(header: str) -> str:
    """The name of a Host header value, without its port (`[::1]:8000` -> `::1`)."""
    return urlsplit(f"//{header}").hostname or ""


def over_tcp(scope: dict[str, Any]) -> bool:
    """Whether the request came from a network peer (an IP address): only those can come from a browser.

    In-process ASGI calls and Unix-socket requests have no IP peer; a web page can reach neither.
    """
    client = scope.get("client")
    if not client:
        return False
    try:
        ipaddress.ip_address(str(client[0]))
    except ValueError:
        return False
    return True


class LoopbackOnly:
    """ASGI middleware for a server without API keys: answer only to this machine's own clients.

    Loopback binding alone does not keep web pages out: DNS rebinding points a page's own name at 127.0.0.1
    (its requests then carry that name as Host: refused with 400), and a page may post cross-site forms and
    `text/plain` bodies without a preflight (they carry its Origin: refused with 403).
    """

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or not over_tcp(scope):
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        host = headers.get(b"host", b"").decode("latin-1")
        origin = headers.get(b"origin", b"").decode("latin-1")
        refusal = None
        if host and not is_loopback_name(host_name(host)):
            refusal = error_response(
                400,
                f"Host {host[:100]!r} is not a loopback name: without API keys the server answers only to "
                "localhost, 127.0.0.1 and ::1 (configure FLYWHEEL_ADMIN_KEYS and FLYWHEEL_SEARCH_KEYS to serve "
                "other names)",
            )
        elif origin and not is_loopback_name(urlsplit(origin).hostname or ""):
            refusal = error_response(
                403,
                f"Origin {origin[:100]!r} is another site: without API keys the server refuses requests from web "
                "pages that are not served from this machine",
            )
        if refusal is not None:
            await refusal(scope, receive, send)
            return
        await self.app(scope, receive, send)


__all__ = [
    "BodyLimit",
    "LoopbackOnly",
    "SafeJSON",
    "error_response",
    "host_name",
    "is_loopback_name",
    "over_tcp",
    "read_body",
    "replay",
]
