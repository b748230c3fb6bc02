"""The LlamaIndex retriever on the real `llama-index-core` and a live `flywheel serve`: scored text nodes with
flywheel's metadata kept from the LLM, k and MetadataFilters passed through, the async path, and feedback."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
from llama_index.core.schema import MetadataMode, NodeWithScore, TextNode
from llama_index.core.vector_stores.types import FilterCondition, FilterOperator, MetadataFilter, MetadataFilters

from flywheel.client import Client
from flywheel.errors import InvalidInput
from flywheel.integrations.llama_index import FlywheelRetriever, to_flywheel_filter
from tests.helpers.factories import CORPUS
from tests.helpers.live import labelled, start_flywheel
from tests.helpers.server import ServerProcess

pytestmark = pytest.mark.slow
TEXTS = dict(CORPUS)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, tiny_model_path: Path) -> Iterator[ServerProcess]:
    running = start_flywheel(tmp_path_factory.mktemp("llama-index") / "data", tiny_model_path)
    yield running
    running.stop()


def test_nodes_carry_the_search_and_match_the_api(server: ServerProcess) -> None:
    retriever = FlywheelRetriever(url=server.url, k=3)
    nodes = retriever.retrieve("learn python")
    with Client(server.url) as client:
        direct = client.search("learn python", k=3)
    assert all(isinstance(n, NodeWithScore) and isinstance(n.node, TextNode) for n in nodes)
    assert [n.node.node_id for n in nodes] == [h["doc_id"] for h in direct["hits"]]
    assert [n.score for n in nodes] == pytest.approx([h["score"] for h in direct["hits"]], abs=1e-5)
    assert [n.metadata["rank"] for n in nodes] == [1, 2, 3] and nodes[0].text == TEXTS[nodes[0].node.node_id]
    shown_to_llm = nodes[0].node.get_content(metadata_mode=MetadataMode.LLM)
    assert "search_id" not in shown_to_llm and "n: " in shown_to_llm  # the document's own metadata stays
    retriever.close()


def test_k_and_metadata_filters_pass_through(server: ServerProcess) -> None:
    either = MetadataFilter(key="n", value=[2, 3], operator=FilterOperator.IN)
    retriever = FlywheelRetriever(url=server.url, k=5, filters=MetadataFilters(filters=[either]))
    assert sorted(n.node.node_id for n in retriever.retrieve("weight")) == ["d3", "d4"]
    retriever.k, retriever.filters = 1, {"n": 7}
    assert [n.node.node_id for n in retriever.retrieve("anything")] == ["d8"]
    retriever.close()


def test_filters_flywheel_cannot_express_are_refused() -> None:
    nested = MetadataFilters(filters=[MetadataFilter(key="a", value="x"), MetadataFilters(filters=[])])
    assert to_flywheel_filter(nested) == {"a": "x"} and to_flywheel_filter(None) is None
    with pytest.raises(InvalidInput, match="operator '>' is not supported"):
        to_flywheel_filter(MetadataFilters(filters=[MetadataFilter(key="n", value=1, operator=FilterOperator.GT)]))
    two = [MetadataFilter(key="a", value="x"), MetadataFilter(key="b", value="y")]
    with pytest.raises(InvalidInput, match="AND only"):
        to_flywheel_filter(MetadataFilters(filters=two, condition=FilterCondition.OR))
    with pytest.raises(InvalidInput, match="given twice"):
        to_flywheel_filter(MetadataFilters(filters=[two[0], two[0]]))


def test_the_async_path(server: ServerProcess) -> None:
    retriever = FlywheelRetriever(url=server.url, k=2)

    async def main() -> list[NodeWithScore]:
        nodes = await retriever.aretrieve("cook rice")
        await retriever.aclose()
        return nodes

    nodes = asyncio.run(main())
    assert [n.node.node_id for n in nodes] == [n.node.node_id for n in retriever.retrieve("cook rice")]
    retriever.close()


def test_a_thumbs_down_and_a_click_become_what_a_cycle_mines(tmp_path: Path, tiny_model_path: Path) -> None:
    server = start_flywheel(tmp_path / "data", tiny_model_path)
    try:
        retriever = FlywheelRetriever(url=server.url, k=3)
        nodes = retriever.retrieve("best laptop for programming")
        retriever.feedback(nodes, thumbs="down", wait=True)  # posted now: errors would raise here
        retriever.feedback([n.node for n in nodes], clicked=3)  # bare TextNodes work too
        retriever.close()
    finally:
        server.stop()
    search_id = nodes[0].metadata["search_id"]
    rows = {r[2]: (r[3], r[4]) for r in labelled(tmp_path / "data") if r[0] == search_id}
    ids = [n.node.node_id for n in nodes]
    assert rows == {ids[0]: (0, 1), ids[1]: (0, 1), ids[2]: (1, 1)}  # a thumbs-down on all, a click on the third
