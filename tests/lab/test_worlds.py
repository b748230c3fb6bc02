"""Worlds: the shipped SciFact world loads offline as documented, and every world's traffic and check are disjoint."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from flywheel.cli import app
from flywheel.errors import InvalidInput
from flywheel.lab.worlds import WORLDS, World, is_check_query, load_beir_world, load_world
from flywheel.util.packaged import SCIFACT_WORLD


def _norm(text: str) -> str:
    return " ".join(text.lower().split())


def _assert_disjoint_and_judged(world: World) -> None:
    """Traffic and check share no query id and no query text; every query has judged documents in the corpus."""
    assert not set(world.traffic_queries) & set(world.check_queries)
    traffic_texts = {_norm(t) for t in world.traffic_queries.values()}
    assert not traffic_texts & {_norm(t) for t in world.check_queries.values()}
    ids = {d.id for d in world.corpus}
    for queries, relevant in (
        (world.traffic_queries, world.traffic_relevant),
        (world.check_queries, world.check_relevant),
    ):
        assert set(relevant) == set(queries)
        assert all(docs and docs <= ids for docs in relevant.values())


def test_scifact_world_loads_offline_with_the_counts_in_its_source_notes() -> None:
    world = load_world("scifact")
    assert world.name == "scifact" and "CC BY-NC" in world.description
    assert len(world.corpus) == 5183
    assert (len(world.traffic_queries), len(world.check_queries)) == (556, 251)
    assert sum(map(len, world.traffic_relevant.values())) == 644
    assert sum(map(len, world.check_relevant.values())) == 273
    _assert_disjoint_and_judged(world)
    # What gets indexed is the BEIR title, a newline, then the abstract (SOURCE.md says so).
    with gzip.open(SCIFACT_WORLD / "corpus.jsonl.gz", "rt", encoding="utf-8") as fh:
        first = json.loads(fh.readline())
    assert world.corpus[0].id == first["_id"] and world.corpus[0].text == f"{first['title']}\n{first['text']}"
    # Kept no bigger than the upstream file (2,757,448 bytes).
    assert (SCIFACT_WORLD / "corpus.jsonl.gz").stat().st_size <= 2_757_448
    for name in ("SOURCE.md", "NOTICE"):
        assert "CC BY-NC 2.0" in (SCIFACT_WORLD / name).read_text(encoding="utf-8")


def test_scifact_shipped_split_is_the_documented_rule() -> None:
    """The files were split by is_check_query; a change to the rule without a rebuild would fail here."""
    world = load_world("scifact")
    assert all(not is_check_query(t) for t in world.traffic_queries.values())
    assert all(is_check_query(t) for t in world.check_queries.values())
    # Claims 85/86 and 89/90 repeat a text: each pair stays on one side.
    for a, b in (("85", "86"), ("89", "90")):
        assert (a in world.check_queries) == (b in world.check_queries)


def test_quora_world_splits_the_demo_set_by_query_deterministically() -> None:
    world = load_world("quora")
    total = len(world.traffic_queries) + len(world.check_queries)
    assert total == 3500 and len(world.corpus) == 5500
    assert 0.25 < len(world.check_queries) / total < 0.35
    _assert_disjoint_and_judged(world)
    again = load_world("quora")
    assert list(again.traffic_queries) == list(world.traffic_queries)
    assert world.traffic().queries == world.traffic_queries and world.check().relevant == world.check_relevant


def _beir(folder: Path, queries: dict[str, str]) -> Path:
    folder.mkdir()
    docs = [{"_id": f"d{q}", "title": "", "text": f"answer to {t}"} for q, t in queries.items()]
    (folder / "corpus.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs))
    (folder / "queries.jsonl").write_text("".join(json.dumps({"_id": q, "text": t}) + "\n" for q, t in queries.items()))
    (folder / "qrels.tsv").write_text("query-id\tcorpus-id\tscore\n" + "".join(f"{q}\td{q}\t1\n" for q in queries))
    return folder


def test_beir_folder_is_split_by_the_same_rule_and_repeated_texts_stay_together(tmp_path: Path) -> None:
    queries = {str(i): f"question number {i}?" for i in range(60)}
    queries["dup"] = "Question  NUMBER 7?"  # the same text as query 7 up to case and spaces
    world = load_beir_world(_beir(tmp_path / "mine", queries))
    assert world.name == "mine" and len(world.traffic_queries) + len(world.check_queries) == 61
    assert ("dup" in world.check_queries) == ("7" in world.check_queries)
    assert set(world.check_queries) == {q for q, t in queries.items() if is_check_query(t)}
    assert world.check_queries and world.traffic_queries
    _assert_disjoint_and_judged(world)


def test_unknown_world_names_the_known_ones() -> None:
    with pytest.raises(InvalidInput) as err:
        load_world("msmarco")
    assert all(name in str(err.value) for name in WORLDS) and set(WORLDS) == {"scifact", "quora"}


def test_demo_command_refuses_an_unknown_world_and_two_sources(tmp_path: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(app, ["demo", "--data-dir", str(tmp_path / "d"), "--world", "nope"])
    assert result.exit_code == 2 and "scifact, quora" in result.output
    both = ["demo", "--data-dir", str(tmp_path / "d"), "--world", "scifact", "--beir", str(tmp_path)]
    result = runner.invoke(app, both)
    assert result.exit_code == 2 and "either --world or --beir" in result.output
    assert not (tmp_path / "d").exists()  # refused before anything was written
