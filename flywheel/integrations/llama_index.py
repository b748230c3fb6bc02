"""A LlamaIndex retriever over a running flywheel server (`pip install "flywheel[llamaindex]"`).

    retriever = FlywheelRetriever(url="http://127.0.0.1:8000", k=4, filters={"tenant": "acme"})
    nodes = retriever.retrieve("forgot password")             # NodeWithScore, score = flywheel's cosine
    retriever.feedback(nodes, thumbs="down")                  # a thumbs-down on the answer built from them

Each node is a `TextNode` with `id_` = `doc_id` and the flywheel `search_id`, `doc_id`, `rank`, `score` and
`model_version` in its metadata (kept out of what an LLM or an embedder is shown).
"""

from __future__ import annotations

import asyncio
from typing import Any

from llama_index.core.base.base_retriever import BaseRetriever
from llama_index.core.callbacks import CallbackManager
from llama_index.core.schema import NodeWithScore, QueryBundle, TextNode
from llama_index.core.vector_stores.types import FilterCondition, FilterOperator, MetadataFilters

from flywheel.client import AsyncClient, Client
from flywheel.errors import InvalidInput
from flywheel.integrations.feedback import FLYWHEEL_KEYS, Thumbs, hit_metadata, send_feedback


class FlywheelRetriever(BaseRetriever):
    """Searches flywheel (`POST /search`) and returns LlamaIndex nodes; `feedback` sends what users did."""

    def __init__(
        self,
        url: str = "http://127.0.0.1:8000",
        api_key: str | None = None,
        k: int = 4,
        filters: MetadataFilters | dict[str, Any] | None = None,
        *,
        client: Client | None = None,
        user_id: str | None = None,
        session_id: str | None = None,
        retry_search: bool = False,
        timeout: float = 30.0,
        callback_manager: CallbackManager | None = None,
        verbose: bool = False,
    ) -> None:
        """Args:
        url, api_key: the flywheel server and its search key.
        k: hits per search (change `retriever.k` between calls as you like).
        filters: a flywheel filter dict, or LlamaIndex `MetadataFilters` with == and `in` filters joined by AND.
        client: a `flywheel.client.Client` to share (one connection pool, one feedback batcher).
        user_id, session_id: logged with each search.
        retry_search: retry a search on connection errors and 5xx (each try that reached the server is logged).
        timeout: seconds per HTTP attempt.
        """
        super().__init__(callback_manager=callback_manager, verbose=verbose)
        self.url, self.api_key, self.timeout = url, api_key, timeout
        self.k = k
        self.filters = filters
        self.client = client or Client(url, api_key, timeout)
        self.who = {name: value for name, value in (("user_id", user_id), ("session_id", session_id)) if value}
        self.retry_search = retry_search
        self.aclient: tuple[asyncio.AbstractEventLoop, AsyncClient] | None = None

    def search_args(self) -> dict[str, Any]:
        """k, the filter in flywheel's form, retrying and who asked."""
        return {"k": self.k, "filter": to_flywheel_filter(self.filters), "retry": self.retry_search, **self.who}

    def _retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        """One flywheel search."""
        return to_nodes(self.client.search(query_bundle.query_str, **self.search_args()))

    async def _aretrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        """The same search through the async client (one per event loop: its connections belong to a loop)."""
        loop = asyncio.get_running_loop()
        if self.aclient is None or self.aclient[0] is not loop:
            self.aclient = (loop, AsyncClient(self.url, self.api_key, self.timeout))
        return to_nodes(await self.aclient[1].search(query_bundle.query_str, **self.search_args()))

    def feedback(
        self,
        nodes: list[NodeWithScore] | list[TextNode],
        *,
        clicked: int | list[int] | None = None,
        thumbs: Thumbs | None = None,
        cited: list[int] | None = None,
        wait: bool = False,
    ) -> list[dict[str, Any]]:
        """Send what the user did with an answer's sources (e.g. a response's `source_nodes`).

        Args:
            nodes: the nodes this retriever returned, in the order shown.
            clicked, thumbs, cited: 1-based source positions clicked; "up"/"down" on the answer; the sources
                the answer cited (default all).
            wait: post now and raise on errors; default: queue on the client's batcher and return at once.

        Returns:
            The events (queued ones with their event ids).
        """
        return send_feedback(self.client, nodes, clicked=clicked, thumbs=thumbs, cited=cited, wait=wait)

    def close(self) -> None:
        """Flush queued feedback and close the client's connections."""
        self.client.close()

    async def aclose(self) -> None:
        """Close the async client of this event loop, if `aretrieve` made one."""
        if self.aclient is not None and self.aclient[0] is asyncio.get_running_loop():
            await self.aclient[1].aclose()
        self.aclient = None


def to_nodes(result: dict[str, Any]) -> list[NodeWithScore]:
    """LlamaIndex nodes for a flywheel search answer, in rank order."""
    keys = list(FLYWHEEL_KEYS)
    return [
        NodeWithScore(
            node=TextNode(
                id_=hit["doc_id"],
                text=hit["text"],
                metadata=hit_metadata(hit, result["search_id"], result["model_version"]),
                excluded_llm_metadata_keys=keys,
                excluded_embed_metadata_keys=keys,
            ),
            score=hit["score"],
        )
        for hit in result["hits"]
    ]


def to_flywheel_filter(filters: MetadataFilters | dict[str, Any] | None) -> dict[str, Any] | None:
    """A flywheel filter from LlamaIndex `MetadataFilters` (== and `in`, AND only) or a flywheel dict as is.

    Raises:
        InvalidInput: an operator or condition flywheel's filter cannot express, or a key given twice.
    """
    if filters is None or isinstance(filters, dict):
        return filters or None
    out: dict[str, Any] = {}
    stack = [filters]
    while stack:
        group = stack.pop()
        if group.condition not in (None, FilterCondition.AND) and len(group.filters) > 1:
            raise InvalidInput(f"filter condition {group.condition.value!r}: flywheel joins filters with AND only")
        for item in group.filters:
            if isinstance(item, MetadataFilters):
                stack.append(item)
                continue
            if item.operator not in (FilterOperator.EQ, FilterOperator.IN):
                raise InvalidInput(
                    f"filter on {item.key!r}: operator {item.operator.value!r} is not supported, use == or in"
                )
            if item.key in out:
                raise InvalidInput(f"filter key {item.key!r} is given twice; use one `in` filter with a list")
            out[item.key] = list(item.value) if item.operator == FilterOperator.IN else item.value
    return out or None
