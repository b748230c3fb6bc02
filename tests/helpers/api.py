"""Small HTTP helpers over the FastAPI TestClient."""

from __future__ import annotations

from fastapi.testclient import TestClient


def search(api: TestClient, query: str = "learn python", k: int = 3, **extra: object) -> dict:
    """POST /search and return the body (asserting 200)."""
    response = api.post("/search", json={"query": query, "k": k, **extra})
    assert response.status_code == 200, response.text
    return response.json()
