"""Online tests on the serving path: interleaved and shadow searches, what they log, and writes during a test."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from flywheel.scoring.exploration import Exploration
from flywheel.scoring.interleaving import CHALLENGER, INCUMBENT, SHARED, common_prefix
from flywheel.serve.experiment import Experiment, merge
from flywheel.serve.service import Service
from flywheel.types import Document
from tests.helpers.factories import world_documents
from tests.helpers.server import second_version

QUERY = "good guitar tips"


@pytest.fixture
def two_versions(service: Service, tmp_path: Path) -> tuple[Service, object, object]:
    """A serving v1 and a visibly different v2 with its own complete collection (a fine-tuned challenger)."""
    service.upsert_documents([Document(d["id"], d["text"], d["metadata"]) for d in world_documents()])
    v1, v2, _ = second_version(service, tmp_path / "v2-model", QUERY)
    return service, v1, v2


def _ranking(service: Service, encoder: object, k: int = 5) -> list[str]:
    vector = encoder.encode([QUERY])[0]
    return [h.doc_id for h in service.index.search(vector, k, collection=service.index.collection(encoder.version))]


def _impressions(service: Service, search_id: str) -> list[tuple[int, str, str | None]]:
    return service.store.query(
        "SELECT rank, doc_id, team FROM impressions WHERE search_id = ? ORDER BY rank", [search_id]
    )


def test_an_interleaved_search_shows_both_rankers_and_logs_each_hits_team(two_versions: tuple) -> None:
    service, v1, v2 = two_versions
    incumbent, challenger = _ranking(service, v1), _ranking(service, v2)
    assert incumbent != challenger
    service.start_experiment(Experiment("c1", "interleave", "v2", v2, None, fraction=1.0))
    result = service.search(QUERY, 5)
    assert result.model_version == "v1"
    assert result.experiment == {"id": "c1", "arm": "interleaved", "challenger": "v2"}
    shown = [h.doc_id for h in result.hits]
    assert len(shown) == 5 == len(set(shown)) and set(shown) <= set(incumbent) | set(challenger)
    logged = _impressions(service, result.search_id)
    assert [r for r, _, _ in logged] == [1, 2, 3, 4, 5] and [d for _, d, _ in logged] == shown
    prefix = common_prefix(incumbent, challenger)
    for rank, doc_id, team in logged:
        assert team == (SHARED if rank <= prefix else team) and team in (INCUMBENT, CHALLENGER, SHARED)
        assert doc_id in {INCUMBENT: incumbent, CHALLENGER: challenger, SHARED: incumbent[:prefix]}[team]
    # The list is the team draft of the two rankings seeded by the search id: reproducible from the log.
    hits_1 = service.index.search(v1.encode([QUERY])[0], 5)
    hits_2 = service.index.search(v2.encode([QUERY])[0], 5, collection=service.index.collection("v2"))
    assert [h.doc_id for h in merge(result.search_id, hits_1, hits_2, 5)[0]] == shown
    row = service.store.query("SELECT experiment, arm FROM searches WHERE search_id = ?", [result.search_id])
    assert row == [("c1", "interleaved")]


def test_searches_outside_the_fraction_see_the_incumbent_alone(two_versions: tuple) -> None:
    service, v1, v2 = two_versions
    experiment = Experiment("c1", "interleave", "v2", v2, None, fraction=0.3)
    service.start_experiment(experiment)
    arms = []
    for _ in range(60):
        result = service.search(QUERY, 5)
        arms.append(result.experiment["arm"])
        assert experiment.arm(result.search_id) == result.experiment["arm"]  # by search id, deterministic
        if result.experiment["arm"] == "incumbent":
            assert [h.doc_id for h in result.hits] == _ranking(service, v1)
            assert {t for _, _, t in _impressions(service, result.search_id)} == {None}
    assert 0 < arms.count("interleaved") < 60 and set(arms) == {"interleaved", "incumbent"}


def test_a_shadow_search_shows_the_incumbent_and_logs_what_the_challenger_would_have_shown(two_versions: tuple) -> None:
    service, v1, v2 = two_versions
    service.start_experiment(Experiment("c2", "shadow", "v2", v2, None, fraction=1.0))
    result = service.search(QUERY, 5)
    assert result.experiment == {"id": "c2", "arm": "shadow"}
    assert [h.doc_id for h in result.hits] == _ranking(service, v1)
    ((doc_ids, overlap),) = service.store.query(
        "SELECT doc_ids, overlap FROM shadow_rankings WHERE search_id = ?", [result.search_id]
    )
    assert json.loads(doc_ids) == _ranking(service, v2)
    assert overlap == len(set(_ranking(service, v1)) & set(_ranking(service, v2)))


def test_writes_during_a_test_reach_the_challengers_collection_and_its_end_stops_it(two_versions: tuple) -> None:
    service, _, v2 = two_versions
    experiment = Experiment("c3", "interleave", "v2", v2, None, fraction=1.0)
    service.start_experiment(experiment)
    service.upsert_documents([Document("new", "guitar strings and frets, a new page")])
    assert "new" in {d for ids, _ in service.index.scroll_vectors("v2") for d in ids}
    service.delete_document(world_documents()[0]["id"])
    assert world_documents()[0]["id"] not in {d for ids, _ in service.index.scroll_vectors("v2") for d in ids}
    assert service.index.count("v2") == service.index.count("v1") == service.store.count_documents()
    service.end_experiment(experiment)
    assert service.experiment is None and service.search(QUERY, 3).experiment is None


def test_a_swap_ends_the_test_in_the_same_step(two_versions: tuple) -> None:
    service, _, v2 = two_versions
    service.start_experiment(Experiment("c4", "interleave", "v2", v2, None, fraction=1.0))
    service.swap(v2)
    result = service.search(QUERY, 3)
    assert service.experiment is None and result.experiment is None and result.model_version == "v2"


def test_one_test_at_a_time(two_versions: tuple) -> None:
    from flywheel.errors import Conflict

    service, _, v2 = two_versions
    service.start_experiment(Experiment("c5", "interleave", "v2", v2, None, fraction=1.0))
    with pytest.raises(Conflict, match="c5"):
        service.start_experiment(Experiment("c6", "shadow", "v2", v2, None, fraction=1.0))


def test_searches_in_an_online_test_do_not_explore(two_versions: tuple) -> None:
    service, v1, v2 = two_versions
    service.exploration = Exploration(share=1.0, slots=2, depth=5)
    experiment = Experiment("c5", "interleave", "v2", v2, None, fraction=1.0)
    service.start_experiment(experiment)
    result = service.search(QUERY, 5)
    hits_1 = service.index.search(v1.encode([QUERY])[0], 5)
    hits_2 = service.index.search(v2.encode([QUERY])[0], 5, collection=service.index.collection("v2"))
    assert [h.doc_id for h in result.hits] == [h.doc_id for h in merge(result.search_id, hits_1, hits_2, 5)[0]]
    service.end_experiment(experiment)
    after = service.search(QUERY, 5)
    row = service.store.query("SELECT experiment, arm FROM searches WHERE search_id = ?", [after.search_id])
    assert row == [(None, "explore")]
