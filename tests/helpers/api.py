"""Small HTTP helpers over the FastAPI TestClient."""

from __future__ import annotations

import numpy as np
from fastapi.testclient import TestClient

from flywheel.serve.service import Service


def search(api: TestClient, query: str = "learn python", k: int = 3, **extra: object) -> dict:
    """POST /search and return the body (asserting 200)."""
    response = api.post("/search", json={"query": query, "k": k, **extra})
    assert response.status_code == 200, response.text
    return response.json()


def brute_force_ranking(service: Service, query: str, k: int) -> list[tuple[str, float]]:
    """The top `k` (doc_id, cosine) over every stored document, computed by hand with the serving encoder:
    what the index must answer."""
    docs = [d for batch in service.store.iter_documents() for d in batch]
    vectors = service.encoder.encode([d.text for d in docs])
    scores = vectors @ service.encoder.encode([query])[0]
    order = np.argsort(-scores, kind="stable")[:k]
    return [(docs[i].id, float(scores[i])) for i in order]


def ids_and_scores(body: dict) -> tuple[list[str], list[float]]:
    """A search answer's doc ids and scores, in rank order."""
    return [h["doc_id"] for h in body["hits"]], [h["score"] for h in body["hits"]]
