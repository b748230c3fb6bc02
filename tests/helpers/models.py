"""Registering model versions for tests: a visibly different copy of the tiny model as a candidate."""

from __future__ import annotations

from pathlib import Path

from flywheel.models.encoder import Encoder
from flywheel.models.loading import load_model
from flywheel.models.registry import ModelVersion
from flywheel.serve.service import Service
from flywheel.util.files import now_iso


def add_candidate(service: Service, tiny_model_path: Path, seed: int = 1, parent: str = "v1") -> ModelVersion:
    """Register a visibly different model of the tiny model's shape as the next version (a stand-in for a
    fine-tuned one): its weights are the tiny model's plus seeded noise, saved in the version's folder."""
    import torch

    version, folder = service.registry.allocate()
    model = load_model(str(tiny_model_path), "cpu")
    torch.manual_seed(seed)
    with torch.no_grad():
        for param in model.parameters():
            param.add_(torch.randn_like(param) * 0.1)
    model.save(str(folder), create_model_card=False)
    return service.registry.save(
        ModelVersion(version, "finetune", str(tiny_model_path), now_iso(), model.get_embedding_dimension(), parent)
    )


def embed_candidate(service: Service, tiny_model_path: Path, seed: int = 1) -> Encoder:
    """`add_candidate` on top of what serves now, with its own complete collection: ready to swap in."""
    entry = add_candidate(service, tiny_model_path, seed, parent=service.serving_version)
    encoder = service.load_encoder(entry)
    service.index.create(entry.version, encoder.dimension)
    service.embed_into(entry.version, encoder, [d for batch in service.store.iter_documents() for d in batch])
    return encoder


def promote_candidate(service: Service, tiny_model_path: Path, seed: int = 1) -> Encoder:
    """What a full cycle's promotion does: a candidate embedded, swapped in, and made the incumbent."""
    encoder = embed_candidate(service, tiny_model_path, seed)
    service.swap(encoder)
    service.registry.promote(encoder.version)
    return encoder
