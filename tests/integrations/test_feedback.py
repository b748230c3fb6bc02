"""The framework-neutral feedback helper: positions, thumbs on the cited sources, and the errors it names."""

from __future__ import annotations

import pytest

from flywheel.errors import InvalidInput
from flywheel.integrations.feedback import feedback_events, hit_metadata

SOURCES = [{"search_id": "s1", "doc_id": f"d{i}", "rank": i} for i in (1, 2, 3)]


def test_a_click_on_the_second_source() -> None:
    assert feedback_events(SOURCES, clicked=2) == [{"search_id": "s1", "doc_id": "d2", "type": "click"}]
    assert [e["doc_id"] for e in feedback_events(SOURCES, clicked=[3, 1, 3])] == ["d3", "d1"]  # once each


def test_thumbs_go_to_the_documents_the_answer_cited() -> None:
    assert [(e["doc_id"], e["type"]) for e in feedback_events(SOURCES, thumbs="down")] == [
        ("d1", "thumbs_down"),
        ("d2", "thumbs_down"),
        ("d3", "thumbs_down"),
    ]
    events = feedback_events(SOURCES, clicked=1, thumbs="up", cited=[3])
    assert [(e["doc_id"], e["type"]) for e in events] == [("d1", "click"), ("d3", "thumbs_up")]
    assert feedback_events(SOURCES) == []


def test_mistakes_are_named() -> None:
    with pytest.raises(InvalidInput, match="position 4 is not a source: use 1..3"):
        feedback_events(SOURCES, clicked=4)
    with pytest.raises(InvalidInput, match="cited position 0"):
        feedback_events(SOURCES, thumbs="up", cited=[0])
    with pytest.raises(InvalidInput, match="thumbs must be 'up' or 'down'"):
        feedback_events(SOURCES, thumbs="sideways")  # type: ignore[arg-type]
    with pytest.raises(InvalidInput, match="source 2 has no flywheel search_id"):
        feedback_events([SOURCES[0], {"doc_id": "x"}], clicked=1)


def test_flywheel_keys_win_over_the_documents_own() -> None:
    hit = {"doc_id": "d1", "rank": 1, "score": 0.5, "text": "t", "metadata": {"rank": "gold", "lang": "en"}}
    assert hit_metadata(hit, "s9", "v2") == {
        "lang": "en",
        "rank": 1,
        "search_id": "s9",
        "doc_id": "d1",
        "score": 0.5,
        "model_version": "v2",
    }
