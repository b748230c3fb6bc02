"""Turning what a chat user did with an answer's sources into flywheel feedback events (framework-neutral).

A source is anything whose metadata carries the `search_id`, `doc_id` and `rank` a flywheel retriever put
there: a LangChain `Document`, a LlamaIndex `NodeWithScore` or `TextNode`, or that metadata as a mapping.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

from flywheel.errors import InvalidInput

# The keys a flywheel retriever adds to every document's metadata (they win over the document's own keys).
FLYWHEEL_KEYS = ("search_id", "doc_id", "rank", "score", "model_version")

Thumbs = Literal["up", "down"]


def hit_metadata(hit: Mapping[str, Any], search_id: str, model_version: str) -> dict[str, Any]:
    """The metadata a framework document gets for one search hit: the document's own, then flywheel's keys."""
    return {
        **hit.get("metadata", {}),
        "search_id": search_id,
        "doc_id": hit["doc_id"],
        "rank": hit["rank"],
        "score": hit["score"],
        "model_version": model_version,
    }


def _metadata(source: Any, position: int) -> Mapping[str, Any]:
    """The flywheel metadata of one source (1-based `position` only for the message)."""
    metadata = source if isinstance(source, Mapping) else getattr(source, "metadata", None)
    if not isinstance(metadata, Mapping) or not metadata.get("search_id") or not metadata.get("doc_id"):
        raise InvalidInput(
            f"source {position} has no flywheel search_id/doc_id in its metadata: pass the documents a "
            "FlywheelRetriever returned"
        )
    return metadata


def feedback_events(
    sources: Sequence[Any],
    *,
    clicked: int | Sequence[int] | None = None,
    thumbs: Thumbs | None = None,
    cited: Sequence[int] | None = None,
) -> list[dict[str, Any]]:
    """Feedback events for what the user did with the sources of one answer.

    Args:
        sources: the documents the retriever returned, in the order the user saw them.
        clicked: the 1-based position(s) of the source(s) the user opened ("the second source" is 2): a click
            each (sources shown above a click and not clicked count as skipped when a cycle mines pairs).
        thumbs: "up" or "down" on the answer: a thumbs_up or thumbs_down for each document the answer cited.
        cited: 1-based positions of the sources the answer cited (default: all of them).

    Returns:
        Event bodies without ids (the client gives each an id when it sends it).

    Raises:
        InvalidInput: a position is out of range, `thumbs` is not "up"/"down", or a source lacks flywheel metadata.
    """
    metas = [_metadata(s, i + 1) for i, s in enumerate(sources)]

    def picked(positions: Sequence[int], what: str) -> list[Mapping[str, Any]]:
        for p in positions:
            if isinstance(p, bool) or not isinstance(p, int) or not 1 <= p <= len(metas):
                raise InvalidInput(f"{what} position {p!r} is not a source: use 1..{len(metas)}")
        return [metas[p - 1] for p in dict.fromkeys(positions)]

    if thumbs not in (None, "up", "down"):
        raise InvalidInput(f"thumbs must be 'up' or 'down', not {thumbs!r}")
    clicks = [] if clicked is None else [clicked] if isinstance(clicked, int) else list(clicked)
    events = [_event(m, "click") for m in picked(clicks, "clicked")]
    if thumbs is not None:
        answered = picked(list(range(1, len(metas) + 1)) if cited is None else list(cited), "cited")
        events += [_event(m, f"thumbs_{thumbs}") for m in answered]
    return events


def send_feedback(
    client: Any,
    sources: Sequence[Any],
    *,
    clicked: int | Sequence[int] | None = None,
    thumbs: Thumbs | None = None,
    cited: Sequence[int] | None = None,
    wait: bool = False,
) -> list[dict[str, Any]]:
    """Send `feedback_events` for these sources through a flywheel `Client`: posted now with `wait` (errors
    raised), else queued on its batcher. Returns the events (queued ones with their event ids)."""
    events = feedback_events(sources, clicked=clicked, thumbs=thumbs, cited=cited)
    if not events:
        return []
    if wait:
        client.feedback(events)
        return events
    return client.feedback.send(events)


def _event(metadata: Mapping[str, Any], kind: str) -> dict[str, Any]:
    return {"search_id": str(metadata["search_id"]), "doc_id": str(metadata["doc_id"]), "type": kind}
