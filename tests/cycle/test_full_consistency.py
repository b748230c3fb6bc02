"""The full cycle's retrieval evaluation ranks both models over one id set, whatever was written meanwhile."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import numpy as np

from flywheel.cycle.full import _retrieval
from flywheel.cycle.mining import MinedPairs, Pair
from flywheel.serve.service import Service
from flywheel.types import Document
from tests.helpers.factories import world_documents
from tests.helpers.models import embed_candidate


def test_a_document_written_during_evaluation_cannot_fail_or_tilt_the_comparison(
    service: Service, tiny_model_path: Path
) -> None:
    service.upsert_documents([Document(d["id"], d["text"], d["metadata"]) for d in world_documents()])
    candidate = embed_candidate(service, tiny_model_path)
    incumbent = service.encoder
    # After the candidate's catch-up: one document reaches the serving collection only, one leaves it only.
    late = Document("late", "a document written while the cycle evaluated")
    service.index.upsert(incumbent.version, [late], incumbent.encode([late.text]))
    gone = world_documents()[0]["id"]
    service.index.delete(incumbent.version, [gone])
    heldout = [Pair("good guitar tips", "good guitar tips", world_documents()[1]["id"], "", 1, 1, 0, 1)]
    mined = MinedPairs(heldout, None, datetime(2026, 1, 1), shown={"good guitar tips": {world_documents()[1]["id"]}})

    views, _ = _retrieval(service, incumbent, candidate, mined, [], heldout)

    assert views["unseen"]["n_queries"] == 1 and np.isfinite(views["unseen"]["ndcg@10"]["delta"])
