"""Which model versions can serve again: pruning old ones, and rolling back to a kept one atomically."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime, timedelta

from flywheel.errors import NotFound
from flywheel.models.encoder import compatible
from flywheel.models.registry import ModelVersion
from flywheel.serve.service import Service


def prune(service: Service) -> list[str]:
    """Keep the incumbent and the newest `keep_versions - 1` other servable versions; drop the rest's
    collections and weights (meta.json stays, so the history and reports still resolve)."""
    incumbent = service.registry.incumbent().version
    servable = [v for v in service.registry.versions() if v.status in ("incumbent", "retired")]
    others = sorted((v for v in servable if v.version != incumbent), key=lambda v: -v.number)
    keep = {incumbent} | {v.version for v in others[: service.settings.keep_versions - 1]}
    # An adapter serves through its base's encoder and collection: those stay while the adapter is kept.
    keep |= {v.parent for v in servable if v.kind == "adapter" and v.version in keep and v.parent}
    keep.add(service.encoder.version)
    dropped = []
    for entry in servable:
        if entry.version in keep:
            continue
        service.index.drop(entry.version)
        if entry.kind != "base":
            for item in entry.path.iterdir():
                if item.name != "meta.json":
                    shutil.rmtree(item) if item.is_dir() else item.unlink()
        service.registry.mark(entry.version, "pruned")
        dropped.append(entry.version)
    return dropped


def rollback(service: Service, to: str | None = None) -> ModelVersion:
    """Put alias and encoder back on a kept version (default: the one before the incumbent), atomically.

    Raises:
        NotFound: no such version, no previous version, or its weights were pruned.
    """
    registry = service.registry
    current = registry.incumbent().version
    if to is None:
        previous = [h["previous"] for h in registry.history() if h["version"] == current and h["previous"]]
        if not previous:
            raise NotFound(f"{current} has no previous version to roll back to")
        to = previous[-1]
    target = registry.get(to)
    if target.version == current or to not in kept_versions(service):
        raise NotFound(
            f"{to} cannot serve (status {target.status}); versions to roll back to: {kept_versions(service)}"
        )
    encoder, adapter = service.load_serving(target)  # an adapter serves on its base's encoder and collection
    if encoder is service.encoder:  # same collection: only the query transform changes
        service.swap(encoder, adapter=adapter)
        return registry.promote(to, action="rollback")
    base = encoder.version
    # A retired collection missed every write since it stopped serving: replay those, or rebuild it (also when
    # its vectors came from a backend of another precision than today's query encoder).
    since = _retired_at(service, base)
    usable = service.index.exists(base) and compatible(service.index.vectors_backend(base), encoder.backend)
    if since is None or not usable:
        since = service.mark()
        bulk = service.bulk_encoder(registry.get(base), encoder)
        service.rebuild(base, bulk, encoder.dimension)
    service.swap(encoder, before_switch=lambda: service.catch_up(encoder, since), adapter=adapter)
    return registry.promote(to, action="rollback")


def _retired_at(service: Service, version: str) -> datetime | None:
    """When `version` last stopped serving (naive UTC), from the registry history (an adapter on it counts as
    it still serving, so the earlier hand-over is taken: replaying more is harmless, less would lose writes)."""
    times = [h["at"] for h in service.registry.history() if h["previous"] == version and h["version"] != version]
    if not times:
        return None
    return datetime.fromisoformat(times[-1]).astimezone(UTC).replace(tzinfo=None) - timedelta(seconds=1)


def catch_up_floor(service: Service) -> datetime | None:
    """The earliest time a rollback to a kept version would replay document writes from (None: no rollback
    would replay any): document tombstones from then on must stay."""
    bases = set()
    for version in kept_versions(service):
        entry = service.registry.get(version)
        bases.add(entry.parent if entry.kind == "adapter" and entry.parent else version)
    bases.discard(service.encoder.version)  # the serving collection is current: nothing to replay
    times = [t for base in bases if service.index.exists(base) and (t := _retired_at(service, base)) is not None]
    return min(times, default=None)


def kept_versions(service: Service) -> list[str]:
    """Versions a rollback can target: retired ones that kept their weights, and base models (by name); an
    adapter only while its base can serve again."""
    versions = service.registry.versions()
    servable = {v.version for v in versions if v.kind != "adapter" and (v.status != "pruned" or v.kind == "base")}
    return [
        v.version
        for v in versions
        if (v.status == "retired" or (v.kind == "base" and v.status == "pruned"))
        and (v.kind != "adapter" or v.parent in servable)
    ]


__all__ = ["catch_up_floor", "kept_versions", "prune", "rollback"]
