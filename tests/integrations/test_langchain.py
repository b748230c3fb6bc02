"""The LangChain retriever on the real `langchain-core` and a live `flywheel serve`: documents with flywheel's
metadata, k and filters passed through, the async path, a chain, and feedback a cycle mines."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
from langchain_core.documents import Document
from langchain_core.runnables import RunnableLambda

from flywheel.client import Client
from flywheel.errors import InvalidInput
from flywheel.integrations.langchain import FlywheelRetriever
from tests.helpers.factories import CORPUS
from tests.helpers.live import labelled, start_flywheel
from tests.helpers.server import ServerProcess

pytestmark = pytest.mark.slow
TEXTS = dict(CORPUS)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, tiny_model_path: Path) -> Iterator[ServerProcess]:
    running = start_flywheel(tmp_path_factory.mktemp("langchain") / "data", tiny_model_path)
    yield running
    running.stop()


def test_documents_carry_the_search_and_match_the_api(server: ServerProcess) -> None:
    retriever = FlywheelRetriever(url=server.url, api_key=None, k=3)
    docs = retriever.invoke("learn python")
    with Client(server.url) as client:
        direct = client.search("learn python", k=3)
    assert all(isinstance(d, Document) for d in docs)
    assert [d.id for d in docs] == [h["doc_id"] for h in direct["hits"]]  # same model, same ranking
    assert [d.metadata["rank"] for d in docs] == [1, 2, 3]
    assert [d.page_content for d in docs] == [TEXTS[d.id] for d in docs]
    for doc, hit in zip(docs, direct["hits"], strict=True):
        assert doc.metadata["doc_id"] == doc.id and doc.metadata["score"] == pytest.approx(hit["score"], abs=1e-5)
        assert doc.metadata["n"] == hit["metadata"]["n"] and doc.metadata["model_version"] == "v1"
    assert len({d.metadata["search_id"] for d in docs}) == 1 and docs[0].metadata["search_id"] != direct["search_id"]
    retriever.close()


def test_k_and_filters_pass_through(server: ServerProcess) -> None:
    retriever = FlywheelRetriever(url=server.url, k=5, filter={"n": [0, 1, 2, 3]})
    assert {d.metadata["n"] for d in retriever.invoke("python weight")} <= {0, 1, 2, 3}
    assert len(retriever.invoke("python weight", k=2)) == 2
    only = retriever.invoke("anything at all", filter={"n": 6})  # a call's key replaces the retriever's
    assert [d.id for d in only] == ["d7"]
    with pytest.raises(InvalidInput, match="filter"):
        retriever.invoke("python", filter={"bad key!": 1})
    retriever.close()


def test_the_async_path_and_a_chain(server: ServerProcess) -> None:
    retriever = FlywheelRetriever(url=server.url, k=2)

    async def main() -> list[Document]:
        docs = await retriever.ainvoke("cook rice", k=1)
        await retriever.aclose()
        return docs

    docs = asyncio.run(main())
    assert len(docs) == 1 and docs[0].metadata["rank"] == 1
    chain = retriever | RunnableLambda(lambda found: [d.metadata["doc_id"] for d in found])
    assert chain.invoke("cook rice") == [d.id for d in retriever.invoke("cook rice")]
    retriever.close()


def test_feedback_refuses_what_it_cannot_name(server: ServerProcess) -> None:
    retriever = FlywheelRetriever(url=server.url, k=2)
    docs = retriever.invoke("sky blue")
    with pytest.raises(InvalidInput, match="use 1..2"):
        retriever.feedback(docs, clicked=3)
    with pytest.raises(InvalidInput, match="no flywheel search_id"):
        retriever.feedback([Document(page_content="not from flywheel")], clicked=1)
    assert retriever.feedback(docs) == []  # nothing happened: nothing is sent
    retriever.close()


def test_a_click_and_a_thumbs_down_become_what_a_cycle_mines(tmp_path: Path, tiny_model_path: Path) -> None:
    server = start_flywheel(tmp_path / "data", tiny_model_path)
    try:
        retriever = FlywheelRetriever(url=server.url, k=3)
        clicked = retriever.invoke("learn python")
        answered = retriever.invoke("lose weight")
        queued = retriever.feedback(clicked, clicked=2)  # the user opened the second source
        assert len(queued) == 1 and queued[0]["event_id"]
        retriever.feedback(answered, thumbs="down", cited=[1, 3])  # the answer citing sources 1 and 3 was bad
        retriever.close()  # flushes the batcher
        assert retriever.client.feedback.stats.sent == 3
    finally:
        server.stop()
    rows = {(r[0], r[2]): (r[3], r[4]) for r in labelled(tmp_path / "data")}
    click_search, answer_search = clicked[0].metadata["search_id"], answered[0].metadata["search_id"]
    assert rows[(click_search, clicked[1].id)] == (1, 0)  # positive
    assert rows[(click_search, clicked[0].id)] == (0, 1)  # shown above the click: skipped
    assert rows[(answer_search, answered[0].id)] == (0, 1) and rows[(answer_search, answered[2].id)] == (0, 1)
    assert (answer_search, answered[1].id) not in rows  # not cited: no signal
