"""Registering model versions for tests: a visibly different copy of the tiny model as a candidate."""

from __future__ import annotations

from pathlib import Path

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
