"""Model registry: one folder per model version with its `meta.json`, plus the incumbent and its history.

Layout::

    <data_dir>/models/
        registry.json          {"incumbent": "v3", "history": [{"version", "action", "at", "previous"}]}
        v1/meta.json           the base model (loaded by name or path, nothing copied)
        v2/meta.json + model   a fine-tuned model: the sentence-transformers files live beside meta.json
"""

from __future__ import annotations

import re
import shutil
import threading
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from flywheel.errors import NotFound
from flywheel.util.files import now_iso, read_json, write_json_atomic

VERSION_RE = re.compile(r"^v(\d+)$")


@dataclass
class ModelVersion:
    """A registry entry: what a model is, where it came from, and how it did."""

    version: str
    kind: str  # "base" | "finetune" (later: "adapter")
    base_model: str
    created_at: str
    dimension: int
    parent: str | None = None
    model: str | None = None  # name or path to load; None means the files in this version's folder
    status: str = "candidate"  # candidate | incumbent | retired | rejected | pruned
    made_by: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    path: Path = field(default=Path("."), compare=False)

    @property
    def load_path(self) -> str:
        """What to hand to SentenceTransformer(...) to load this version."""
        return self.model or str(self.path)

    @property
    def number(self) -> int:
        """The numeric part of the version ("v12" -> 12), for ordering."""
        match = VERSION_RE.match(self.version)
        return int(match.group(1)) if match else 0

    def to_dict(self) -> dict[str, Any]:
        """The meta.json content (the folder path is implied by where the file lives)."""
        data = asdict(self)
        data.pop("path")
        return data


class Registry:
    """Reads and writes the model registry folder; the serving process is its only writer."""

    def __init__(self, models_dir: Path) -> None:
        """Args: models_dir: `<data_dir>/models`."""
        self.dir = Path(models_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()

    @property
    def _state_file(self) -> Path:
        return self.dir / "registry.json"

    def _state(self) -> dict[str, Any]:
        if not self._state_file.exists():
            return {"incumbent": None, "history": []}
        return read_json(self._state_file)

    def get(self, version: str) -> ModelVersion:
        """Load one version's meta.json.

        Raises:
            NotFound: no such version.
        """
        meta_file = self.dir / version / "meta.json"
        if not VERSION_RE.match(version) or not meta_file.exists():
            raise NotFound(f"model version {version!r} does not exist")
        data = read_json(meta_file)
        known = {k: v for k, v in data.items() if k in ModelVersion.__dataclass_fields__}
        return ModelVersion(**known, path=meta_file.parent)

    def versions(self) -> list[ModelVersion]:
        """Every registered version, oldest first."""
        found = [
            self.get(p.name)
            for p in self.dir.iterdir()
            if p.is_dir() and VERSION_RE.match(p.name) and (p / "meta.json").exists()
        ]
        return sorted(found, key=lambda v: v.number)

    def incumbent(self) -> ModelVersion:
        """The version that serves now.

        Raises:
            NotFound: the registry is empty (call `ensure_base` first).
        """
        current = self._state()["incumbent"]
        if current is None:
            raise NotFound("the registry has no incumbent yet")
        return self.get(current)

    def history(self) -> list[dict[str, Any]]:
        """Every promotion and rollback, oldest first."""
        return list(self._state()["history"])

    def ensure_base(self, base_model: str, dimension: int) -> ModelVersion:
        """Register the base model as the first incumbent if the registry is empty.

        Args:
            base_model: sentence-transformers name or local path.
            dimension: its output dimension.

        Returns:
            The incumbent (the new base version, or the existing incumbent).
        """
        with self._lock:
            if self._state()["incumbent"] is not None:
                return self.incumbent()
            version, _ = self.allocate()
            entry = ModelVersion(
                version=version,
                kind="base",
                base_model=base_model,
                model=base_model,
                created_at=now_iso(),
                dimension=dimension,
                made_by={"how": "base model, used as-is"},
            )
            self.save(entry)
            self._set_incumbent(version, "initial")
            return self.get(version)

    def allocate(self) -> tuple[str, Path]:
        """Reserve the next version name and create its folder.

        Returns:
            (version, folder).
        """
        numbers = [int(m.group(1)) for p in self.dir.iterdir() if (m := VERSION_RE.match(p.name))]
        version = f"v{max(numbers, default=0) + 1}"
        folder = self.dir / version
        folder.mkdir()
        return version, folder

    def save(self, entry: ModelVersion) -> ModelVersion:
        """Write (or rewrite) a version's meta.json, merging keys written earlier (e.g. by training)."""
        folder = self.dir / entry.version
        meta_file = folder / "meta.json"
        existing = read_json(meta_file) if meta_file.exists() else {}
        write_json_atomic(meta_file, {**existing, **entry.to_dict()})
        entry.path = folder
        return entry

    def promote(self, version: str, action: str = "promoted") -> ModelVersion:
        """Make `version` the incumbent and record it in the history (the caller swaps the serving side)."""
        with self._lock:
            entry = self.get(version)
            previous = self._state()["incumbent"]
            if previous and previous != version:
                old = self.get(previous)
                old.status = "retired"
                self.save(old)
            entry.status = "incumbent"
            self.save(entry)
            self._set_incumbent(version, action)
            return entry

    def mark(self, version: str, status: str, metrics: dict[str, Any] | None = None) -> ModelVersion:
        """Set a version's status (e.g. "rejected") and merge metrics into its meta.json."""
        entry = self.get(version)
        entry.status = status
        if metrics:
            entry.metrics = {**entry.metrics, **metrics}
        return self.save(entry)

    def remove(self, version: str) -> None:
        """Delete a version's folder (never the incumbent)."""
        if self._state()["incumbent"] == version:
            raise ValueError(f"refusing to delete the incumbent {version}")
        shutil.rmtree(self.dir / version, ignore_errors=True)

    def _set_incumbent(self, version: str, action: str) -> None:
        state = self._state()
        state["history"].append({"version": version, "action": action, "at": now_iso(), "previous": state["incumbent"]})
        state["incumbent"] = version
        write_json_atomic(self._state_file, state)
        entry = self.get(version)
        if entry.status != "incumbent":
            entry.status = "incumbent"
            self.save(entry)


def mark_discarded(registry: Registry, version: str, status: str, metrics: dict[str, Any] | None = None) -> None:
    """Keep a version's number and meta.json but delete its weights (rejected, failed or interrupted).

    A folder without meta.json (training died before writing it) gets a stub, so the number is never reused
    and reports that name it still resolve.
    """
    folder = registry.dir / version
    for item in folder.iterdir() if folder.exists() else ():
        if item.name != "meta.json":
            shutil.rmtree(item) if item.is_dir() else item.unlink()
    if not (folder / "meta.json").exists():
        folder.mkdir(parents=True, exist_ok=True)
        registry.save(ModelVersion(version, "finetune", "", now_iso(), 0, made_by={"how": "not completed"}))
    registry.mark(version, status, metrics)
