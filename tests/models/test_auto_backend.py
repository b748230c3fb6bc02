"""The "auto" encoder backend: ONNX fp32 wherever a version exports, torch where its export failed."""

from __future__ import annotations

import numpy as np
import pytest

from flywheel.config import Settings
from flywheel.models import export
from flywheel.models.encoder import load_encoder
from flywheel.models.export import FAILED_FILE, export_folder, export_version, failed_export
from flywheel.models.registry import Registry
from flywheel.serve.service import Service

TEXTS = ["how do I reset my password", "what is the capital of France", ""]


def test_auto_is_the_default_backend(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FLYWHEEL_ENCODER_BACKEND")
    assert Settings().encoder_backend == "auto" and Settings().bulk_backend == "auto"


def test_auto_exports_a_version_at_its_first_load_and_encodes_what_torch_does(
    service: Service, registry: Registry
) -> None:
    entry = registry.get("v1")
    settings = service.settings.model_copy(update={"encoder_backend": "auto", "serve_threads": 1})
    assert not export_folder(registry, entry).exists()
    auto = load_encoder(registry, entry, settings)
    torch = load_encoder(registry, entry, settings, backend="torch")
    assert auto.backend == "onnx" and (export_folder(registry, entry) / "export.json").exists()
    assert auto.model.session.get_session_options().intra_op_num_threads == 1
    np.testing.assert_allclose(auto.encode(TEXTS), torch.encode(TEXTS), atol=1e-4)
    assert "guard" not in export.read_export(export_folder(registry, entry))  # fp32 needs no int8 guard


def test_a_failed_export_serves_torch_is_recorded_and_not_tried_again_until_forced(
    service: Service, registry: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    entry = registry.get("v1")
    settings = service.settings.model_copy(update={"encoder_backend": "auto"})
    calls: list[str] = []
    real = export.export_model

    def broken(load_path: str, *args: object, **kwargs: object) -> dict:
        calls.append(load_path)
        raise RuntimeError("this graph does not trace")

    monkeypatch.setattr(export, "export_model", broken)
    first = load_encoder(registry, entry, settings)
    again = load_encoder(registry, entry, settings)
    assert (first.backend, again.backend) == ("torch", "torch") and len(calls) == 1
    assert "this graph does not trace" in failed_export(registry, entry)["error"]
    monkeypatch.setattr(export, "export_model", real)
    export_version(registry, entry, force=True)  # what `flywheel export v1 --force` does first
    assert not (entry.path / FAILED_FILE).exists()
    assert load_encoder(registry, entry, settings).backend == "onnx"


def test_a_transient_export_error_is_not_recorded(
    service: Service, registry: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    entry = registry.get("v1")

    def full_disk(*args: object, **kwargs: object) -> dict:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(export, "export_model", full_disk)
    encoder = load_encoder(registry, entry, service.settings.model_copy(update={"encoder_backend": "auto"}))
    assert encoder.backend == "torch" and failed_export(registry, entry) is None


def test_a_fresh_data_dir_on_the_default_serves_onnx_and_a_later_torch_start_keeps_its_vectors(
    settings: Settings,
) -> None:
    auto = settings.model_copy(update={"encoder_backend": "auto"})
    service = Service.open(auto)
    try:
        assert service.encoder.backend == "onnx" and service.index.vectors_backend("v1") == "onnx"
    finally:
        service.close()
    service = Service.open(settings)  # torch: the same fp32 function, so the collection stays
    try:
        assert service.encoder.backend == "torch" and service.index.vectors_backend("v1") == "onnx"
    finally:
        service.close()


def test_auto_encodes_with_torch_on_a_cuda_device(
    service: Service, registry: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    from flywheel.models import encoder as encoder_module

    monkeypatch.setattr(encoder_module, "resolve_device", lambda device: "cuda")  # as on a machine with a GPU
    entry = registry.get("v1")
    encoder = load_encoder(registry, entry, service.settings.model_copy(update={"encoder_backend": "auto"}))
    assert encoder.backend == "torch" and not export_folder(registry, entry).exists()
