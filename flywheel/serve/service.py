"""The serving core: store + index + registry + the live encoder, with atomic swaps.

The API and the CLI are thin layers over `Service`. One lock (`_serving`) ties the encoder (and the query
adapter, if one serves) to the collection the alias points at: a search encodes with a snapshot of both,
then, under the lock, checks that both are still current before it queries the alias; a swap changes alias,
encoder and adapter together under the same lock. So no answer ever mixes two model versions.

With an adapter incumbent, `encoder` is its base version's encoder (documents and the collection stay the
base's) and `adapter` maps the base's query vectors; the version that answers is the adapter's.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, TypeVar

from flywheel.config import Settings
from flywheel.errors import Conflict, IndexMismatch, NotFound
from flywheel.models.encoder import Encoder, compatible, load_encoder, torch_encoder
from flywheel.models.loading import load_model
from flywheel.models.query_adapter import QueryAdapter
from flywheel.models.registry import ModelVersion, Registry
from flywheel.scoring.exploration import AskCounts, Exploration
from flywheel.serve.engine import VectorIndex, open_index
from flywheel.serve.experiment import Experiment, merge, shadow_record
from flywheel.serve.ledger import asked_counts
from flywheel.serve.recovery import settle_promoted_cycles
from flywheel.serve.repair import match_backend, repair
from flywheel.serve.store import Store
from flywheel.types import Document, Event, Hit, Impression
from flywheel.util.files import utcnow
from flywheel.util.progress import progress_bar

log = logging.getLogger(__name__)

T = TypeVar("T")
ASKED_QUESTIONS = 100_000  # distinct questions counted for FLYWHEEL_EXPLORE_REPEATS (about 20 MB at most)


@dataclass(frozen=True)
class SearchTimings:
    """Where a search's time went, in seconds: encoding the query (and a challenger's, in an online test) and
    querying the engine; an operator reads them as the Server-Timing header and the search-stage metrics."""

    encode_s: float = 0.0
    engine_s: float = 0.0


@dataclass(frozen=True)
class SearchResult:
    """What a search returns: its id (for feedback), the answering model version, and the hits."""

    search_id: str
    model_version: str
    hits: list[Hit]
    experiment: dict[str, str] | None = None  # {"id", "arm"} (+ "challenger" when interleaved) during a test
    timings: SearchTimings = SearchTimings()


class Service:
    """Owns the DuckDB store, the Qdrant client, the registry and the live encoder of one data dir."""

    def __init__(self, settings: Settings, store: Store, index: VectorIndex, registry: Registry) -> None:
        """Use `Service.open(settings)`; this constructor only wires parts that are already open."""
        self.settings = settings
        self.store = store
        self.index = index
        self.registry = registry
        self._serving = threading.RLock()
        self._encoder: Encoder | None = None
        self._adapter: QueryAdapter | None = None
        self._experiment: Experiment | None = None
        self.exploration = Exploration(
            settings.explore_share, settings.explore_slots, settings.explore_depth, settings.explore_repeats
        )
        self._asked: AskCounts | None = None  # counted only when exploration waits for repeats
        if self.exploration.share > 0 and self.exploration.repeats > 0:
            days = settings.window_days
            since = utcnow() - timedelta(days=days) if days else datetime(1970, 1, 1)
            self._asked = AskCounts(asked_counts(store, since, ASKED_QUESTIONS), ASKED_QUESTIONS)

    @classmethod
    def open(cls, settings: Settings, progress: bool = False) -> Service:
        """Open every part of a data dir and make the serving side consistent with the registry.

        On first start the base model becomes the incumbent and the corpus (if any) is embedded; on a
        restart after a crash, leftovers are repaired (see `reconcile`), and a cycle cut short after its
        candidate was promoted is recorded as promoted (see `settle_promoted_cycles`).

        Raises:
            StoreLocked: another process holds the data dir.
            ConfigError: the model cannot be loaded.
        """
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        store = Store(settings.db_file)
        try:
            index = open_index(settings)  # the engine the data dir records (flywheel.serve.engine)
        except BaseException:
            store.close()
            raise
        service = cls(settings, store, index, Registry(settings.models_dir))
        try:
            service.reconcile(progress=progress)
            settle_promoted_cycles(store, service.registry)
            if settings.search_log_flush_ms > 0:
                store.start_search_log(settings.search_log_flush_ms / 1000)
        except BaseException:
            service.close()
            raise
        return service

    def close(self) -> None:
        """Close Qdrant and DuckDB (checkpointing the WAL), under the serving lock: never halfway through a swap."""
        with self._serving:
            self.index.close()
            self.store.close()

    # --- the live encoder -------------------------------------------------------------------------------

    @property
    def encoder(self) -> Encoder:
        """The encoder that serves now."""
        if self._encoder is None:
            raise NotFound("no model is loaded yet")
        return self._encoder

    @property
    def adapter(self) -> QueryAdapter | None:
        """The query adapter that serves now, or None when the encoder's own query vectors are used."""
        return self._adapter

    @property
    def serving_version(self) -> str:
        """The version that answers searches: the adapter's when one serves, else the encoder's."""
        adapter = self._adapter
        return adapter.version if adapter is not None else self.encoder.version

    @property
    def experiment(self) -> Experiment | None:
        """The online test that runs now, if any."""
        return self._experiment

    def start_experiment(self, experiment: Experiment, before_start: Callable[[], None] | None = None) -> None:
        """Let a challenger rank beside the incumbent (interleaved or in shadow) from the next search on.

        Args:
            experiment: the test.
            before_start: run under the lock first, while no write can interleave (a fine-tuned challenger's
                last catch-up: from the start on, document writes and deletes reach its collection too).

        Raises:
            Conflict: another test runs.
        """
        with self._serving:
            if self._experiment is not None:
                raise Conflict(f"the online test of cycle {self._experiment.id} is running")
            if before_start is not None:
                before_start()
            self._experiment = experiment

    def end_experiment(self, experiment: Experiment) -> None:
        """Stop a test: from the next search on only the incumbent ranks (a no-op if it already ended)."""
        with self._serving:
            if self._experiment is experiment:
                self._experiment = None

    def load_encoder(self, entry: ModelVersion, backend: str | None = None, bulk: bool = False) -> Encoder:
        """Load a registry version as an Encoder (not yet serving) on the query backend, or `backend`, or
        with `bulk` the corpus-encoding backend (see flywheel.encoder.load_encoder)."""
        return load_encoder(self.registry, entry, self.settings, backend, bulk)

    def bulk_encoder(self, entry: ModelVersion, query: Encoder) -> Encoder:
        """The encoder that (re-)embeds a version's corpus: `query` itself unless another backend is set.

        Raises:
            IndexMismatch: the two would make vectors of different precision (never mixed in one collection).
        """
        if self.settings.bulk_backend == self.settings.encoder_backend:
            return query
        bulk = self.load_encoder(entry, bulk=True)
        if not compatible(bulk.backend, query.backend):
            raise IndexMismatch(
                f"{entry.version}: corpus encoder {bulk.backend} and query encoder {query.backend} differ in precision"
            )
        return bulk

    def load_serving(self, entry: ModelVersion) -> tuple[Encoder, QueryAdapter | None]:
        """Load what serving a version needs: (encoder, None) for a model, (its base's encoder, adapter) for an
        adapter; the live encoder is reused when it is that base."""
        current = self._encoder
        if entry.kind != "adapter":
            if current is not None and current.version == entry.version:
                return current, None
            return self.load_encoder(entry), None
        if entry.parent is None:
            raise NotFound(f"adapter {entry.version} names no base version")
        adapter = QueryAdapter.load(entry.path, entry.version, entry.parent)
        if current is not None and current.version == entry.parent:
            return current, adapter
        return self.load_encoder(self.registry.get(entry.parent)), adapter

    def reconcile(self, progress: bool = False) -> None:
        """Make alias, collection and encoder agree with the registry's incumbent and the DuckDB corpus.

        Creates the base version on first start, (re)builds a missing collection, repairs a collection whose
        points differ from the documents (e.g. after a crash between the two writes), and points the alias.
        """
        adapter = None
        try:
            entry = self.registry.incumbent()
        except NotFound:
            model = load_model(self.settings.base_model, self.settings.device)
            entry = self.registry.ensure_base(self.settings.base_model, int(model.get_embedding_dimension()))
            if self.settings.encoder_backend == "torch":  # the model just loaded serves
                encoder = torch_encoder(entry.version, model, self.settings)
            else:
                encoder = self.load_encoder(entry)
        else:
            encoder, adapter = self.load_serving(entry)
        with self._serving:
            # An adapter serves on its base's collection: the collection (and its backend) is the base's.
            base = entry if entry.kind != "adapter" else self.registry.get(encoder.version)
            if not self.index.exists(base.version):
                self.index.create(base.version, encoder.dimension, backend=encoder.backend)
            else:
                match_backend(self, base, encoder, progress)
                self.index.ensure_payload_indexes(base.version)  # the setting may have changed since it was made
            repair(self, base.version, encoder, progress)
            self.index.optimize(base.version)  # Edge: index what was written since the last build, before serving
            if self.index.serving_version() != base.version:
                log.info("pointing alias %r at %s", self.index.alias, self.index.collection(base.version))
                self.index.point_alias(base.version)
            self._encoder = encoder
            self._adapter = adapter

    def rebuild(self, version: str, bulk: Encoder, dimension: int | None = None, progress: bool = False) -> None:
        """(Re)create a version's collection empty and embed every stored document into it with `bulk`.

        One way to build a collection from the store, for a backend mismatch at start-up, a cycle's re-embed
        and a rollback to a retired collection. The collection is marked as made by `bulk.backend`;
        `dimension` defaults to `bulk.dimension`.
        """
        size = bulk.dimension if dimension is None else dimension
        self.index.create(version, size, replace=True, backend=bulk.backend)
        for batch in self.store.iter_documents(batch_size=2048):
            self.embed_into(version, bulk, batch, progress=progress)
        self.index.optimize(version)

    def embed_into(self, version: str, encoder: Encoder, docs: list[Document], progress: bool = False) -> None:
        """Encode documents and upsert them into a version's collection, in chunks, with a progress bar."""
        chunk = max(self.settings.encode_batch_size * 8, 256)
        bar = progress_bar() if progress else None
        if bar is not None:
            bar.start()
            task = bar.add_task(f"embedding into {self.index.collection(version)}", total=len(docs))
        try:
            for start in range(0, len(docs), chunk):
                part = docs[start : start + chunk]
                self.index.upsert(version, part, encoder.encode([d.text for d in part]))
                if bar is not None:
                    bar.advance(task, len(part))
        finally:
            if bar is not None:
                bar.stop()

    def swap(self, encoder: Encoder, before_switch: object | None = None, adapter: QueryAdapter | None = None) -> None:
        """Switch alias, encoder and query adapter in one step under the serving lock.

        Args:
            encoder: the new version's encoder (an adapter's base); its collection must be complete.
            before_switch: optional callable run under the lock just before the switch (final catch-up),
                while no document write or search can interleave.
            adapter: the query adapter to serve on top of `encoder`; None serves the encoder alone (so a full
                promotion starts clean).
        """
        if adapter is not None and adapter.parent != encoder.version:
            raise ValueError(f"adapter {adapter.version} belongs to {adapter.parent}, not {encoder.version}")
        # Outside the lock (building an index on a server takes a while): a kept collection rolled back to was
        # made under older settings; a fresh one already has them and this is one read.
        self.index.ensure_payload_indexes(encoder.version)
        with self._serving:
            if callable(before_switch):
                before_switch()
            made_by = self.index.vectors_backend(encoder.version)
            if not compatible(made_by, encoder.backend):
                raise IndexMismatch(
                    f"{self.index.collection(encoder.version)} holds {made_by} vectors; queries would be encoded "
                    f"with {encoder.backend}: not switching"
                )
            if self.index.serving_version() != encoder.version:
                self.index.point_alias(encoder.version)
            self._encoder = encoder
            self._adapter = adapter
            self._experiment = None  # a swap ends any online test: what was tested now serves, or never will

    # --- requests ---------------------------------------------------------------------------------------

    def search(
        self,
        query: str,
        k: int,
        user_id: str | None = None,
        session_id: str | None = None,
        metadata_filter: dict[str, Any] | None = None,
    ) -> SearchResult:
        """Encode, search through the alias, and log the search and its impressions before answering."""
        return self.answer(query, k, lambda result: result, user_id, session_id, metadata_filter)

    def answer(
        self,
        query: str,
        k: int,
        render: Callable[[SearchResult], T],
        user_id: str | None = None,
        session_id: str | None = None,
        metadata_filter: dict[str, Any] | None = None,
    ) -> T:
        """Search, make the caller's answer with `render`, then log the search and its impressions.

        With `metadata_filter`, only documents whose metadata match are searched (and so shown, logged and
        later mined: a skip is a hard negative only among the documents the filter allowed).

        The answer is made before anything is logged, so a search that cannot be answered (a hit that cannot
        be serialised) leaves no searches or impressions rows behind.

        On the exploring share of searches (`Settings.explore_share`, never during an online test) the last
        positions show a random draw from just below the top k (`flywheel.scoring.exploration`), logged with
        arm "explore" and the ranks as shown.

        During an online test (`start_experiment`) the challenger ranks too: an interleaved search shows the
        team-draft merge of both lists (each impression logged with its team), a shadow search shows the
        incumbent's and logs the challenger's. The challenger's query is encoded beside the incumbent's (a second
        encode only for a fine-tuned challenger) and both collections are queried under the same lock, so an
        answer mixes at most the two versions under test.
        """
        search_id = uuid.uuid4().hex
        asked = self._asked.see(query) if self._asked is not None else 0
        encode_s = engine_s = 0.0  # encode_s adds up the retries after a swap: all the time spent encoding
        while True:
            encoder, adapter, experiment = self.encoder, self._adapter, self._experiment
            # Exploration stays out of an online test: its clicks must compare the two rankers alone.
            explores = experiment is None and self.exploration.explores(search_id, k, asked)
            started = time.perf_counter()
            vector = encoder.encode([query])[0]
            query_vector = adapter.apply(vector) if adapter is not None else vector
            arm = experiment.arm(search_id) if experiment is not None else None
            challenger_vector = None
            if experiment is not None and arm != "incumbent":
                raw = vector if experiment.encoder is encoder else experiment.encoder.encode([query])[0]
                challenger_vector = experiment.adapter.apply(raw) if experiment.adapter is not None else raw
            encode_s += time.perf_counter() - started
            with self._serving:
                if encoder is not self._encoder or adapter is not self._adapter or experiment is not self._experiment:
                    continue  # a swap or a test's start or end happened while encoding: encode again
                started = time.perf_counter()
                fetch = self.exploration.fetch(k) if explores else k
                hits = self.index.search(query_vector, fetch, metadata_filter=metadata_filter)
                challenger_hits = None
                if experiment is not None and challenger_vector is not None:
                    challenger_hits = self.index.search(
                        challenger_vector,
                        k,
                        collection=self.index.collection(experiment.collection),
                        metadata_filter=metadata_filter,
                    )
                engine_s = time.perf_counter() - started
            break
        version = adapter.version if adapter is not None else encoder.version
        if explores:
            hits = self.exploration.arrange(hits, k, search_id)
        impressions = [Impression(rank, h.doc_id, h.score) for rank, h in enumerate(hits, start=1)]
        shadow, tag = None, None
        if experiment is not None:
            tag = {"id": experiment.id, "arm": str(arm)}
            if arm == "interleaved" and challenger_hits is not None:
                hits, impressions = merge(search_id, hits, challenger_hits, k)
                tag["challenger"] = experiment.version
            elif arm == "shadow" and challenger_hits is not None:
                shadow = shadow_record(hits, challenger_hits, k)
        answer = render(SearchResult(search_id, version, hits, tag, SearchTimings(encode_s, engine_s)))
        self.store.log_search(
            search_id,
            query,
            k,
            version,
            impressions,
            user_id=user_id,
            session_id=session_id,
            query_vector=vector,  # the base's vector, before the adapter: what adapter cycles train on
            vector_version=encoder.version,
            search_filter=metadata_filter,
            experiment=tag["id"] if tag else None,
            arm=tag["arm"] if tag else ("explore" if explores else None),
            shadow=shadow,
            wait=self.settings.search_log_flush_ms == 0,  # else queued: written within the window, off this path
        )
        return answer

    def upsert_documents(self, docs: list[Document]) -> int:
        """Store documents in DuckDB and the serving collection; both or neither (a Qdrant error rolls back).

        Returns:
            The number of distinct ids written.
        """
        latest = list({d.id: d for d in docs}.values())
        while True:
            encoder, experiment = self.encoder, self._experiment
            texts = [d.text for d in latest]
            vectors = encoder.encode(texts)
            # A fine-tuned challenger under test searches its own collection: it must see the same documents.
            other = experiment.encoder if experiment is not None and experiment.encoder is not encoder else None
            other_vectors = other.encode(texts) if other is not None else None
            with self._serving:
                if encoder is not self._encoder or experiment is not self._experiment:
                    continue
                with self.store.transaction() as con:
                    written = self.store.upsert_documents(con, latest)
                    self.index.upsert(encoder.version, latest, vectors)
                    if other is not None and other_vectors is not None:
                        self.index.upsert(other.version, latest, other_vectors)
                return written

    def delete_document(self, doc_id: str) -> None:
        """Delete a document from DuckDB and the serving collection.

        Raises:
            NotFound: unknown id.
        """
        with self._serving, self.store.transaction() as con:
            self.store.delete_document(con, doc_id)
            self.index.delete(self.encoder.version, [doc_id])
            experiment = self._experiment
            if experiment is not None and experiment.collection != self.encoder.version:
                self.index.delete(experiment.collection, [doc_id])

    def feedback(self, events: list[Event]) -> tuple[int, int]:
        """Store a batch of feedback events atomically; see `Store.add_events`."""
        return self.store.add_events(events)

    def health(self) -> dict[str, object]:
        """Liveness plus what serves now."""
        return {
            "status": "ok",
            "model_version": self.serving_version,
            "documents": self.store.count_documents(),
            "encoder_backend": self.encoder.backend,
        }

    def mark(self) -> datetime:
        """A point in time that no document write straddles: writes take the serving lock, so every write
        stamped before the mark has committed when this returns (catch-up reads from here miss nothing)."""
        with self._serving:
            return utcnow()

    def catch_up(self, encoder: Encoder, since: datetime) -> datetime:
        """Apply documents written or deleted since `since` to `encoder`'s collection; return the new mark."""
        mark = self.mark()
        docs, deleted = self.changed_since(since)
        if docs:
            self.embed_into(encoder.version, encoder, docs)
        self.index.delete(encoder.version, deleted)
        return mark

    def changed_since(self, since: datetime) -> tuple[list[Document], list[str]]:
        """Documents upserted and ids deleted since a time (re-embedding catch-up)."""
        docs = [d for batch in self.store.iter_documents(changed_since=since) for d in batch]
        return docs, self.store.deleted_since(since)


__all__ = ["SearchResult", "Service", "progress_bar"]
