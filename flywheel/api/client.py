"""A small HTTP client for the flywheel API (used by the CLI when a server owns the data dir)."""

from __future__ import annotations

from typing import Any

import httpx

from flywheel.config import Settings
from flywheel.errors import Conflict, FlywheelError, InvalidInput, NotFound, PayloadTooLarge


class Client:
    """Calls a running `flywheel serve`; errors come back as flywheel's own exceptions."""

    def __init__(self, base_url: str, api_key: str | None = None, timeout: float = 60.0) -> None:
        """Args: base_url: e.g. "http://127.0.0.1:8000"; api_key: sent as a Bearer token when given."""
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.http = httpx.Client(base_url=base_url, headers=headers, timeout=timeout)

    @classmethod
    def for_settings(cls, settings: Settings) -> Client:
        """A client for the server these settings describe, with the first admin (else search) key."""
        host = "127.0.0.1" if settings.host in ("0.0.0.0", "::", "") else settings.host
        key = (settings.admin_keys or settings.search_keys or [None])[0]
        return cls(f"http://{host}:{settings.port}", key)

    def close(self) -> None:
        """Close the connection pool."""
        self.http.close()

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        """Send a request and return the decoded JSON (None for 204).

        Raises:
            FlywheelError: a subclass matching the HTTP status, with the server's message.
        """
        try:
            response = self.http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise FlywheelError(f"cannot reach the flywheel server at {self.http.base_url}: {exc}") from exc
        if response.status_code >= 400:
            try:
                detail = response.json().get("detail", response.text)
            except ValueError:
                detail = response.text
            error = {404: NotFound, 409: Conflict, 413: PayloadTooLarge, 422: InvalidInput}.get(
                response.status_code, FlywheelError
            )
            raise error(f"HTTP {response.status_code}: {detail}")
        return None if response.status_code == 204 else response.json()

    def upsert_documents(self, documents: list[dict[str, Any]]) -> int:
        """POST /documents; returns the number upserted."""
        return int(self.request("POST", "/documents", json={"documents": documents})["upserted"])

    def search(self, query: str, k: int = 10, filter: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
        """POST /search; `filter` restricts it to documents whose metadata match (see docs/api.md)."""
        body = {"query": query, "k": k, **({"filter": filter} if filter else {}), **extra}
        return self.request("POST", "/search", json=body)

    def feedback(self, events: list[dict[str, Any]]) -> dict[str, int]:
        """POST /feedback."""
        return self.request("POST", "/feedback", json={"events": events})

    def stats(self) -> dict[str, int]:
        """GET /stats."""
        return self.request("GET", "/stats")
