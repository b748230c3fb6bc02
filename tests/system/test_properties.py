"""Property-based: random interleavings of document writes, deletes, searches, feedback (repeated and reused
event ids) and rollbacks through the real API, against a plain Python model of what must be stored. After every
step DuckDB, the serving Qdrant collection and the model agree."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, Phase, settings
from hypothesis import event as note
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from flywheel.api.app import create_app
from flywheel.config import Settings
from flywheel.models.registry import ModelVersion
from flywheel.serve.index import content_hash
from flywheel.util.files import now_iso
from tests.helpers.tiny_model import build_tiny_model

pytestmark = pytest.mark.slow

IDS = ["a", "b", "faq/1", "ü 🚀", "e"]
WORDS = "python pasta guitar garden weight money rain piano".split()
texts = st.lists(st.sampled_from(WORDS), min_size=1, max_size=4).map(" ".join)
TYPES = ["click", "skip", "thumbs_up", "thumbs_down"]
_MODEL_DIR: list[Path] = []  # one tiny model for every example


def tiny_model() -> Path:
    if not _MODEL_DIR:
        _MODEL_DIR.append(build_tiny_model(Path(tempfile.mkdtemp(prefix="fw-props-model-")) / "m"))
    return _MODEL_DIR[0]


class ServingLoop(RuleBasedStateMachine):
    """One fresh data dir per example; v2 is a kept version (the same weights, its own collection) to roll to."""

    def __init__(self) -> None:
        super().__init__()
        self.dir = Path(tempfile.mkdtemp(prefix="fw-props-"))
        config = Settings(data_dir=self.dir / "d", base_model=str(tiny_model()), export_on_promote=False)
        self.api = TestClient(create_app(config))
        self.api.__enter__()
        service = self.api.app.state.service
        service.registry.save(
            ModelVersion(
                "v2",
                "finetune",
                str(tiny_model()),
                now_iso(),
                service.encoder.dimension,
                parent="v1",
                model=str(tiny_model()),
                status="retired",
            )  # fmt: skip
        )
        service.index.create("v2", service.encoder.dimension)  # empty: the rollback rebuilds it from DuckDB
        self.docs: dict[str, str] = {}  # id -> text
        self.shown: dict[str, list[str]] = {}  # search id -> doc ids it showed
        self.events: dict[str, tuple[str, str, str]] = {}  # event id -> (search id, doc id, type)
        self.serving = "v1"
        self.next_event = 0

    def teardown(self) -> None:
        self.api.__exit__(None, None, None)
        shutil.rmtree(self.dir, ignore_errors=True)

    @initialize(batch=st.lists(st.tuples(st.sampled_from(IDS), texts), min_size=1, max_size=3), query=texts)
    def start(self, batch: list[tuple[str, str]], query: str) -> None:
        """Some documents and a search that showed them, so feedback can come from the first step on."""
        self.upsert(batch)
        self.search(query, 3)

    @rule(batch=st.lists(st.tuples(st.sampled_from(IDS), texts), min_size=1, max_size=3))
    def upsert(self, batch: list[tuple[str, str]]) -> None:
        body = {"documents": [{"id": i, "text": t} for i, t in batch]}
        response = self.api.post("/documents", json=body)
        assert response.status_code == 200, response.text
        assert response.json() == {"upserted": len({i for i, _ in batch})}
        self.docs.update(dict(batch))  # the last copy of an id wins

    @rule(doc_id=st.sampled_from(IDS))
    def delete(self, doc_id: str) -> None:
        response = self.api.delete(f"/documents/{doc_id}")
        assert response.status_code == (204 if doc_id in self.docs else 404), response.text
        self.docs.pop(doc_id, None)

    @rule(query=texts, k=st.integers(1, 6))
    def search(self, query: str, k: int) -> None:
        response = self.api.post("/search", json={"query": query, "k": k})
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["model_version"] == self.serving
        assert {h["doc_id"]: h["text"] for h in body["hits"]}.items() <= self.docs.items()
        assert len(body["hits"]) == min(k, len(self.docs))
        self.shown[body["search_id"]] = [h["doc_id"] for h in body["hits"]]

    @precondition(lambda self: any(self.shown.values()))
    @rule(data=st.data())
    def more_feedback(self, data: st.DataObject) -> None:
        """Feedback is where ids repeat and conflict: drawn twice as often as the other steps."""
        self.feedback(data)

    @precondition(lambda self: any(self.shown.values()))
    @rule(data=st.data())
    def feedback(self, data: st.DataObject) -> None:
        """A batch of new events, resent ones, ids reused for other content, and events naming no search."""
        batch: list[dict[str, str]] = []
        kinds = ["new", "resent", "reused", "unknown search"] if self.events else ["new", "unknown search"]
        for _ in range(data.draw(st.integers(1, 4), label="size")):
            kind = data.draw(st.sampled_from(kinds), label="kind")
            earlier = {e["event_id"]: (e["search_id"], e["doc_id"], e["type"]) for e in batch}
            known = {**self.events, **earlier}
            if kind in ("resent", "reused"):
                event_id = data.draw(st.sampled_from(sorted(known)), label="event id")
                search_id, doc_id, type_ = known[event_id]
                if kind == "reused":
                    type_ = data.draw(st.sampled_from([t for t in TYPES if t != type_]), label="other type")
            else:
                search_id = data.draw(st.sampled_from(sorted(s for s, ids in self.shown.items() if ids)), label="s")
                doc_id = data.draw(st.sampled_from(self.shown[search_id]), label="doc")
                type_ = data.draw(st.sampled_from(TYPES), label="type")
                event_id = f"ev{self.next_event}"
                self.next_event += 1
                if kind == "unknown search":
                    search_id = "no-such-search"
            note(f"feedback: {kind}")
            batch.append({"event_id": event_id, "search_id": search_id, "doc_id": doc_id, "type": type_})

        response = self.api.post("/feedback", json={"events": batch})
        note(f"feedback answered {response.status_code}")
        seen: dict[str, tuple[str, str, str]] = dict(self.events)
        conflict = False
        for event in batch:
            content = (event["search_id"], event["doc_id"], event["type"])
            conflict |= seen.setdefault(event["event_id"], content) != content
        if any(e["search_id"] == "no-such-search" for e in batch):
            assert response.status_code == 422 and "no-such-search" in response.text, response.text
        elif conflict:
            assert response.status_code == 409 and "idempotency key" in response.text, response.text
        else:
            new = {e["event_id"] for e in batch} - self.events.keys()
            assert response.status_code == 200, response.text
            assert response.json() == {"accepted": len(new), "duplicates": len(batch) - len(new)}
            self.events.update(seen)

    @rule()
    def rollback(self) -> None:
        target = "v2" if self.serving == "v1" else "v1"
        response = self.api.post("/models/rollback", json={"to": target})
        assert response.status_code == 200, response.text
        assert response.json() == {"model_version": target, "previous": self.serving}
        self.serving = target

    @invariant()
    def duckdb_qdrant_and_the_model_agree(self) -> None:
        service = self.api.app.state.service
        stored = dict(service.store.query("SELECT id, text FROM documents"))
        assert stored == self.docs
        assert service.index.content_hashes(self.serving) == {i: content_hash(t, {}) for i, t in self.docs.items()}
        assert service.index.serving_version() == self.serving
        stats = self.api.get("/stats").json()
        assert stats["documents"] == len(self.docs) and stats["searches"] == len(self.shown)
        assert stats["impressions"] == sum(len(ids) for ids in self.shown.values())
        events = {
            r[0]: tuple(r[1:]) for r in service.store.query("SELECT event_id, search_id, doc_id, type FROM events")
        }
        assert events == self.events


# Bounded (about 25 s on 2 shared cores): no shrink phase, which alone can take minutes over a real app; a
# failure still prints every step it took, and its seed reruns it.
ServingLoop.TestCase.settings = settings(
    max_examples=10,
    stateful_step_count=25,
    deadline=None,
    phases=[Phase.generate],
    database=None,
    suppress_health_check=list(HealthCheck),
)
test_serving_loop_agrees_with_a_plain_model = ServingLoop.TestCase
