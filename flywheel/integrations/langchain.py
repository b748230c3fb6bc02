"""A LangChain retriever over a running flywheel server (`pip install "flywheel[langchain]"`).

    retriever = FlywheelRetriever(url="http://127.0.0.1:8000", api_key=None, k=4, filter={"tenant": "acme"})
    docs = retriever.invoke("forgot password")               # or invoke(query, k=2, filter={"lang": "en"})
    retriever.feedback(docs, clicked=2)                      # the user opened the second source

Each `Document` has the flywheel `search_id`, `doc_id`, `rank`, `score` and `model_version` in its metadata
(over the document's own keys), and `id` = `doc_id`.
"""

from __future__ import annotations

import asyncio
from typing import Any

from langchain_core.callbacks import AsyncCallbackManagerForRetrieverRun, CallbackManagerForRetrieverRun
from langchain_core.documents import Document
from langchain_core.retrievers import BaseRetriever
from pydantic import PrivateAttr

from flywheel.client import AsyncClient, Client
from flywheel.integrations.feedback import Thumbs, hit_metadata, send_feedback


class FlywheelRetriever(BaseRetriever):
    """Searches flywheel (`POST /search`) and returns LangChain documents; `feedback` sends what users did."""

    url: str = "http://127.0.0.1:8000"
    api_key: str | None = None
    k: int = 4
    filter: dict[str, Any] | None = None
    user_id: str | None = None
    session_id: str | None = None
    retry_search: bool = False
    timeout: float = 30.0
    client: Client | None = None
    _aclient: tuple[asyncio.AbstractEventLoop, AsyncClient] | None = PrivateAttr(None)

    def model_post_init(self, context: Any, /) -> None:
        """Make the client unless one was given (sharing one keeps one connection pool and one batcher)."""
        if self.client is None:
            self.client = Client(self.url, self.api_key, self.timeout)

    def search_args(self, k: int | None, filter: dict[str, Any] | None) -> dict[str, Any]:
        """The search's k and filter (a call's filter keys are added to the retriever's), and who asked."""
        merged = {**(self.filter or {}), **(filter or {})} or None
        who = {name: value for name in ("user_id", "session_id") if (value := getattr(self, name))}
        return {"k": k or self.k, "filter": merged, "retry": self.retry_search, **who}

    def _get_relevant_documents(
        self,
        query: str,
        *,
        run_manager: CallbackManagerForRetrieverRun,
        k: int | None = None,
        filter: dict[str, Any] | None = None,
    ) -> list[Document]:
        """One flywheel search; `retriever.invoke(query, k=..., filter=...)` passes k and filter here."""
        assert self.client is not None
        return to_documents(self.client.search(query, **self.search_args(k, filter)))

    async def _aget_relevant_documents(
        self,
        query: str,
        *,
        run_manager: AsyncCallbackManagerForRetrieverRun,
        k: int | None = None,
        filter: dict[str, Any] | None = None,
    ) -> list[Document]:
        """The same search through the async client (one per event loop: its connections belong to a loop)."""
        loop = asyncio.get_running_loop()
        if self._aclient is None or self._aclient[0] is not loop:
            self._aclient = (loop, AsyncClient(self.url, self.api_key, self.timeout))
        return to_documents(await self._aclient[1].search(query, **self.search_args(k, filter)))

    def feedback(
        self,
        documents: list[Document],
        *,
        clicked: int | list[int] | None = None,
        thumbs: Thumbs | None = None,
        cited: list[int] | None = None,
        wait: bool = False,
    ) -> list[dict[str, Any]]:
        """Send what the user did with an answer's sources (see `feedback_events` for the arguments).

        Args:
            documents: the documents this retriever returned, in the order shown.
            clicked, thumbs, cited: 1-based source positions clicked; "up"/"down" on the answer; the sources
                the answer cited (default all).
            wait: post now and raise on errors; default: queue on the client's batcher and return at once.

        Returns:
            The events (queued ones with their event ids).
        """
        assert self.client is not None
        return send_feedback(self.client, documents, clicked=clicked, thumbs=thumbs, cited=cited, wait=wait)

    def close(self) -> None:
        """Flush queued feedback and close the client's connections."""
        if self.client is not None:
            self.client.close()

    async def aclose(self) -> None:
        """Close the async client of this event loop, if `ainvoke` made one."""
        if self._aclient is not None and self._aclient[0] is asyncio.get_running_loop():
            await self._aclient[1].aclose()
        self._aclient = None


def to_documents(result: dict[str, Any]) -> list[Document]:
    """LangChain documents for a flywheel search answer, in rank order."""
    return [
        Document(
            id=hit["doc_id"],
            page_content=hit["text"],
            metadata=hit_metadata(hit, result["search_id"], result["model_version"]),
        )
        for hit in result["hits"]
    ]
