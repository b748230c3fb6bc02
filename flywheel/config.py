"""Settings: one pydantic-settings class, read from `FLYWHEEL_*` env vars and an optional TOML/YAML file."""

from __future__ import annotations

import json
import os
import re
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from flywheel.errors import ConfigError
from flywheel.util.packaged import packaged_model_path

CommaList = Annotated[list[str], NoDecode]
Backend = Literal["auto", "torch", "onnx", "onnx-int8"]

FEEDBACK_TYPES = ("click", "skip", "thumbs_up", "thumbs_down")
"""The feedback event types flywheel stores and mines."""
# Qdrant payload index types an equality or any-of filter can use.
PAYLOAD_INDEX_TYPES = ("keyword", "integer", "float", "bool", "datetime", "uuid")
# A metadata key as filters and payload indexes name it: up to four dotted parts for nested metadata.
METADATA_KEY = re.compile(r"[A-Za-z0-9_-]{1,64}(\.[A-Za-z0-9_-]{1,64}){0,3}")
# What UBI's common action names mean as feedback; impressions and views are not feedback (flywheel logged
# what it showed itself), so they are absent and ignored.
UBI_ACTIONS = {
    "click": "click",
    "watch": "click",
    "add_to_cart": "thumbs_up",
    "purchase": "thumbs_up",
    "skip": "skip",
    "thumbs_up": "thumbs_up",
    "thumbs_down": "thumbs_down",
}


def parse_mapping(value: Any) -> Any:
    """A mapping setting from its text form: a JSON object, or "key:value,key:value"; other values pass through.

    Raises:
        ValueError: an entry has no ":" (the message names it).
    """
    if not isinstance(value, str):
        return value
    text = value.strip()
    if text.startswith("{"):
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"not a JSON object: {exc}") from None
    out = {}
    for entry in filter(None, (part.strip() for part in text.split(","))):
        key, sep, item = entry.partition(":")
        if not sep or not key.strip() or not item.strip():
            raise ValueError(f"entry {entry!r}: write key:value")
        out[key.strip()] = item.strip()
    return out


class Settings(BaseSettings):
    """Every knob of flywheel; pass an instance explicitly (`create_app(settings)`), never a global."""

    model_config = SettingsConfigDict(env_prefix="FLYWHEEL_", extra="forbid", validate_default=True)

    # Where state lives.
    data_dir: Path = Field(Path("./flywheel-data"), description="folder for everything below unless set on its own")
    duckdb_path: Path | None = Field(None, description="DuckDB file; default <data_dir>/flywheel.duckdb")
    qdrant_path: Path | None = Field(None, description="Qdrant local-mode folder; default <data_dir>/qdrant")
    qdrant_url: str | None = Field(None, description="Qdrant server URL; when set, local mode is not used")
    qdrant_api_key: SecretStr | None = Field(None, description="API key of the Qdrant server")
    qdrant_shards: int = Field(1, ge=1, description="shard_number for new collections (server mode)")
    qdrant_replication: int = Field(1, ge=1, description="replication_factor for new collections")
    collection_alias: str = Field(
        "documents",
        pattern=r"^[A-Za-z0-9_-]{1,64}$",
        description="searches go through this alias; collections are <alias>__<version>",
    )

    # The model.
    base_model: str = Field("", description="sentence-transformers name or local path; default packaged MiniLM")
    device: str = Field("auto", description="'auto' (CUDA when present), 'cpu', 'cuda', 'cuda:1', ...")
    encode_batch_size: int = Field(64, ge=1, le=4096, description="texts per encoder batch")

    # Inference backends (flywheel.models.encoder), ONNX exports (.export) and the int8 accuracy guard (.guard).
    encoder_backend: Backend = Field(
        "auto",
        description="encodes queries: 'auto' (ONNX fp32 where the version exports, else torch), 'torch', 'onnx' "
        "(fp32) or 'onnx-int8'",
    )
    bulk_encoder_backend: Backend | None = Field(
        None, description="encodes the corpus when (re-)embedding; default encoder_backend; same precision required"
    )
    export_on_promote: bool = Field(True, description="export each promoted version to ONNX (always when needed)")
    int8_max_error_increase: float = Field(
        0.005, ge=0, le=1, description="int8 serves only if its pair error is at most this above fp32's"
    )
    int8_min_cosine: float = Field(0.98, ge=0, le=1, description="... and its mean cosine to fp32 vectors is this")
    serve_threads: int | None = Field(
        None,
        ge=1,
        le=512,
        description="intra-op threads of the query encoder; default torch: half the cores (at least 1), ONNX: 1/core",
    )
    search_workers: int | None = Field(
        None,
        ge=1,
        le=512,
        description="searches answered at once (each encodes and queries on its own thread; more wait their turn); "
        "default one per core, at least 2",
    )
    train_threads: int | None = Field(
        None, ge=1, le=512, description="torch threads while fine-tuning (restored after); default every core"
    )
    guard_pairs: Path | None = Field(
        None, description="labelled pairs for the guard outside a cycle; default the shipped Quora dev pairs"
    )

    # Serving.
    host: str = Field(
        "127.0.0.1", description="bind address of `flywheel serve` (without API keys only loopback is allowed)"
    )
    port: int = Field(8000, ge=1, le=65535, description="port of `flywheel serve`")
    admin_keys: CommaList = Field(default_factory=list, description="comma-separated; admin role")
    search_keys: CommaList = Field(default_factory=list, description="comma-separated; search role")
    log_level: Literal["debug", "info", "warning", "error"] = Field("info", description="log level")
    log_format: Literal["text", "json"] = Field("text", description="json: one object per line with search/cycle ids")
    metrics_public: bool = Field(False, description="serve GET /metrics without a key even when keys are set")
    server_timing: bool = Field(
        True,
        description="answer each search with a Server-Timing header: encode, engine and search (the whole "
        "search on its thread) in ms; false: no header (the metrics keep the same figures)",
    )
    openapi_docs: bool = Field(
        True,
        description="serve the OpenAPI schema and its pages (/openapi.json, /docs, /redoc), without a key: they "
        "describe the routes, never data; false: not served at all (404)",
    )

    # Input limits (each breach is a 4xx that names the limit).
    max_query_chars: int = Field(2000, ge=1, description="longest query accepted (422 beyond)")
    max_k: int = Field(100, ge=1, le=10_000, description="largest k a search may ask for (422 beyond)")
    default_k: int = Field(10, ge=1, description="k when a search does not give one")
    max_documents_per_request: int = Field(1000, ge=1, description="documents per POST /documents (413 beyond)")
    max_document_chars: int = Field(20_000, ge=1, description="longest document text (422 beyond)")
    max_metadata_bytes: int = Field(8192, ge=2, description="largest metadata object as UTF-8 JSON (422 beyond)")
    # Answers stop serialising from ~256 levels and Qdrant writes from ~500: the cap stays far below both.
    max_metadata_depth: int = Field(
        32, ge=1, le=100, description="deepest nesting of objects and lists in a document's metadata (422 beyond)"
    )
    max_events_per_request: int = Field(1000, ge=1, description="events per POST /feedback (413 beyond)")
    max_id_chars: int = Field(256, ge=1, description="longest document, event or search id (422 beyond)")
    max_body_bytes: int = Field(16 * 1024 * 1024, ge=1024, description="largest request body (413 beyond)")

    # Pair mining.
    heldout_percent: int = Field(20, ge=1, le=90, description="share of query groups held out for evaluation")
    max_pairs_per_query: int = Field(20, ge=1, description="cap per query group so a popular query cannot dominate")
    query_group_threshold: float | None = Field(
        None, gt=0, le=1, description="also group queries whose cosine is above this (else normalised text only)"
    )
    mine_negatives: int = Field(0, ge=0, description="extra hard negatives per query mined from the incumbent index")
    mine_margin: float = Field(0.1, ge=0, description="a mined negative must score this much below the positive")
    window_days: float | None = Field(None, gt=0, description="mine only events this recent (default: all)")

    # Training (see flywheel.train.TrainConfig).
    train_loss: str | None = Field(None, description="default: the measured best (see README)")
    train_epochs: float = Field(1.0, gt=0, description="epochs of a full cycle's fine-tune")
    train_batch_size: int = Field(32, ge=2, description="batch size of a full cycle's fine-tune on CPU")
    train_batch_size_cuda: int | None = Field(
        128, ge=2, description="batch size when training runs on CUDA (more in-batch negatives); unset: the above"
    )
    train_learning_rate: float | None = Field(None, gt=0, description="learning rate of a full cycle's fine-tune")
    train_max_steps: int | None = Field(
        None, ge=1, description="stop a fine-tune after this many steps (unset: no cap)"
    )
    train_max_minutes: float | None = Field(
        30.0, gt=0, description="stop a fine-tune after this many minutes (it still saves)"
    )
    train_dim: int | None = Field(None, ge=1, description="Matryoshka output dimension (e.g. 256)")
    train_frozen_dense: bool = Field(
        False, description="full cycles: freeze the base and train a Dense layer after pooling only (re-indexes)"
    )
    train_adapter: bool = Field(False, description="old name of train_frozen_dense (still honoured)")
    seed: int = Field(42, description="seed of training, splits and bootstrap CIs")

    # Query-side adapter cycles (see flywheel.learn.query_adapter; unset values keep the measured defaults).
    cycle_mode: Literal["auto", "adapter", "full"] = Field(
        "auto",
        description="kind of cycle for POST /cycles, `flywheel retrain` and the cycle_cron/interval schedule: "
        "'adapter' (query-side adapter, no re-indexing), 'full' (fine-tune + re-embed), or 'auto' "
        "(full when CUDA is present, else adapter)",
    )
    adapter_cycle_cron: str | None = Field(
        None, description="a second schedule that always runs adapter cycles, e.g. '0 * * * *' (hourly)"
    )
    adapter_cycle_interval_minutes: float | None = Field(None, gt=0, description="... or every N minutes")
    adapter_loss: Literal["mnrl", "mnrl+bce", "bce"] | None = Field(None, description="adapter training loss")
    adapter_epochs: int | None = Field(
        None, ge=1, le=1000, description="epochs of an adapter cycle's training (unset: the measured default)"
    )
    adapter_learning_rate: float | None = Field(
        None, gt=0, description="learning rate of an adapter cycle (unset: the measured default)"
    )
    adapter_scale: float | None = Field(None, gt=0, description="inverse temperature of the adapter's softmax")
    adapter_identity_weight: float | None = Field(None, ge=0, description="L2 pull of the adapter towards identity")
    adapter_negatives: Literal["corpus", "in-batch"] | None = Field(
        None,
        description="what a click is ranked against in training: every document vector of the index ('corpus') "
        "or the other clicks of the batch and the skips ('in-batch')",
    )
    adapter_learner: Literal["adapter+memory", "adapter", "memory"] = Field(
        "adapter+memory",
        description="what an adapter cycle trains: the linear query map, a query memory of answered questions, "
        "or both (the memory applied after the map)",
    )
    adapter_debias: bool = Field(
        True,
        description="weight clicks and passed-over results by inverse position propensity, estimated from the "
        "log by a click model (falls back to unweighted when the log cannot support an estimate)",
    )
    memory_threshold: float = Field(
        0.8, gt=0, lt=1, description="query memory: cosine above which a remembered query's feedback applies"
    )
    memory_max_entries: int = Field(20_000, ge=1, description="query memory: at most this many remembered queries")

    # The promotion gate.
    min_improvement: float = Field(0.005, ge=0, description="error rate must drop by at least this (absolute)")
    min_relative_improvement: float = Field(0.0, ge=0, le=1, description="... and by this share of the incumbent's")
    require_significant: bool = Field(
        True, description="the 95% CI of the lead measure's improvement (nDCG gain or error drop) must exclude zero"
    )
    max_ndcg_drop: float = Field(0.01, ge=0, description="nDCG@10 of a guarding view may fall by at most this much")
    gate_metric: Literal["retrieval", "pair_error"] = Field(
        "retrieval",
        description="what the gate leads with: nDCG@10 of held-out clicks (click traffic) or the pair error "
        "(labelled pairs, the seed's setting); the other is a guard",
    )
    gate_view: Literal["auto", "next_traffic", "unseen"] = Field(
        "auto",
        description="retrieval view the gate leads with (auto: next traffic when it has min_heldout_queries "
        "searches, else unseen queries); the other view guards",
    )
    gate_ranking: Literal["judged", "corpus"] = Field(
        "judged",
        description="how the retrieval gate ranks a held-out search: only the documents its feedback judged "
        "(clicked or passed over; unbiased towards what the incumbent happened to show) or the whole corpus",
    )
    min_ndcg_gain: float = Field(0.0, ge=0, description="nDCG@10 of the lead view must rise by at least this")
    max_error_rise: float = Field(
        0.02, ge=0, description="with the retrieval gate: the held-out pair error may rise by at most this"
    )
    min_heldout_queries: int = Field(
        30, ge=2, description="fewer held-out searches with a click in the lead view: no decision possible"
    )
    next_traffic_percent: int = Field(
        20, ge=0, le=50, description="share of the latest searches with feedback held out by time (0: none)"
    )
    max_cycle_minutes: float = Field(
        120.0, gt=0, description="a cycle over this budget is not promoted; its trainer is killed at the budget"
    )
    shutdown_timeout_s: float = Field(
        60.0, ge=0, description="on shutdown, how long to wait for a running cycle to stop at its next stage"
    )
    min_heldout_pairs: int = Field(30, ge=4, description="fewer labelled held-out pairs: no decision possible")
    golden_pairs: Path | None = Field(None, description="labelled pairs file; its error may not get worse")
    keep_versions: int = Field(3, ge=1, description="versions (collections + weights) kept for rollback")

    # The online test: a candidate that passed the offline gate proves itself on live searches first.
    online_test: Literal["off", "interleave", "shadow"] = Field(
        "off",
        description="off: promote on the offline gate; interleave: team-draft a share of live searches with the "
        "candidate and promote or reject on users' clicks; shadow: the candidate ranks silently, then is promoted",
    )
    interleave_fraction: float = Field(
        0.5, gt=0, le=1, description="share of searches (by search id) that show the interleaved list"
    )
    interleave_alpha: float = Field(
        0.05, gt=0, lt=0.5, description="error rate of the online test's stop rule (valid under continuous peeking)"
    )
    interleave_max_searches: int = Field(
        20000, ge=1, description="an online test ends undecided after this many of its searches (incumbent kept)"
    )
    interleave_max_hours: float = Field(
        168.0, gt=0, description="... or after this many hours (interleave: incumbent kept; shadow: promoted)"
    )
    interleave_check_seconds: float = Field(
        10.0, gt=0, description="how often the online test reads its feedback and applies the stop rule"
    )

    # Exploration: a share of searches shows, in its last positions, results from just below the top k, so
    # clicks can reach documents the ranker puts just out of sight (docs/adapters.md, "Exploration": off by
    # default, measured to earn nothing at demo-sized traffic).
    explore_share: float = Field(
        0.0, ge=0, le=1, description="share of searches (by search id) whose last positions explore; 0 = off"
    )
    explore_slots: int = Field(3, ge=1, description="how many of the last positions an exploring search draws")
    explore_depth: int = Field(20, ge=1, description="the draw reaches this many results below k")
    explore_repeats: int = Field(
        0, ge=0, description="only questions asked at least this many times before explore; 0 = any search"
    )

    # Scheduling (inside `flywheel serve`).
    cycle_interval_minutes: float | None = Field(None, gt=0, description="run a cycle every N minutes")
    cycle_cron: str | None = Field(None, description="or a crontab expression, e.g. '0 3 * * *'")
    # Filtering and OpenSearch UBI ingest: payload indexes for filtered keys, what UBI action names mean.
    payload_indexes: Annotated[dict[str, str], NoDecode] = Field(
        default_factory=dict,
        description="metadata keys searches filter on -> Qdrant index type (keyword, integer, float, bool, "
        "datetime, uuid), as 'tenant:keyword,lang:keyword' or a JSON object; dotted keys for nested metadata; "
        "created on every collection at start and on each new one, so a swap keeps them (Qdrant Edge and a "
        "server build them; local mode keeps none)",
    )
    ubi_actions: Annotated[dict[str, str], NoDecode] = Field(
        default_factory=lambda: dict(UBI_ACTIONS),
        description="POST /ubi/events: UBI action_name -> feedback type (click, skip, thumbs_up, thumbs_down), "
        "as 'name:type,...' or a JSON object; events with other action names are ignored and counted",
    )

    # Retention (`flywheel gc`, `POST /ops/gc`, and `retention_cron` inside `flywheel serve`). Whatever the
    # setting, a run keeps feedback no cycle has consumed yet, the latest cycles' held-out window, and the
    # reports and snapshots of the serving model and its rollback targets (docs/security.md#retention).
    retain_searches_days: float = Field(
        0,
        ge=0,
        description="delete searches logged more than this many days ago, with their shown results, feedback "
        "events and shadow rankings (0: keep forever; the log is what every cycle trains on)",
    )
    retain_events_days: float = Field(
        0,
        ge=0,
        description="delete feedback events received more than this many days ago, keeping their searches "
        "(0: keep forever; events are the training signal)",
    )
    retain_tombstones_days: float = Field(
        30,
        ge=0,
        description="delete records of deleted documents older than this many days (0: keep forever); only a "
        "swap's or rollback's catch-up reads them, and those a rollback target still needs are kept",
    )
    retain_reports: int = Field(
        0, ge=0, description="keep the promotion reports of the newest N cycles (0: keep all; they are the audit trail)"
    )
    retain_snapshots: int = Field(
        20,
        ge=0,
        description="keep the pair snapshots (cycles/<id>/) of the newest N cycles (0: keep all); they hold "
        "document texts and only serve to reproduce a training run",
    )
    retention_cron: str | None = Field(
        "30 3 * * *",
        description="when `flywheel serve` applies retention (UTC crontab, default daily at 03:30; deferred while "
        "a cycle runs); empty: only `flywheel gc` or POST /ops/gc trims",
    )
    # The embedded vector engine (flywheel.serve.engine, edge_index) and the HNSW index of new collections.
    qdrant_engine: Literal["edge", "local"] | None = Field(
        None,
        description="embedded vector engine when qdrant_url is not set: 'edge' (Qdrant Edge in-process: HNSW "
        "index, filters in the engine) or 'local' (qdrant-client local mode: scans every vector); unset: the "
        "engine the data dir records in engine.json (edge for a new data dir); a data dir keeps the engine it "
        "was made with until `flywheel migrate-engine --to ...` moves it",
    )
    hnsw_m: int = Field(16, ge=4, le=128, description="HNSW edges per node of new collections (edge, server)")
    hnsw_ef_construct: int = Field(
        100, ge=4, le=2000, description="HNSW candidates while building new collections' graphs (edge, server)"
    )
    hnsw_ef: int | None = Field(
        128, ge=1, le=10_000, description="HNSW candidates per search (edge, server; unset: Qdrant's default)"
    )
    quantization: Literal["none", "int8"] = Field(
        "none",
        description="int8: new collections also keep int8 scalar-quantized vectors that the HNSW search reads, "
        "rescored with the float vectors (edge, server)",
    )

    # The search log off the request path (flywheel.serve.store: queued searches, written in batches).
    search_log_flush_ms: float = Field(
        1000,
        ge=0,
        le=60_000,
        description="how long an answered search may wait in memory before it is written to DuckDB, with the others "
        "that waited, in one transaction (0: each search is written before it is answered); a waiting search is "
        "journaled to a file first, so a kill -9 loses none (start-up writes them back), and feedback on it is "
        "judged after it is written, never refused",
    )

    min_new_pairs: int = Field(100, ge=0, description="skip a scheduled cycle until this many new pairs arrived")

    @field_validator("admin_keys", "search_keys", mode="before")
    @classmethod
    def _split_keys(cls, value: Any) -> Any:
        """Accept "k1,k2" from the environment so keys can be rotated by listing old and new."""
        if isinstance(value, str):
            return [k.strip() for k in value.split(",") if k.strip()]
        return value

    @field_validator("payload_indexes", "ubi_actions", mode="before")
    @classmethod
    def _parse_mapping(cls, value: Any) -> Any:
        """Accept "key:value,key:value" or a JSON object from the environment."""
        return parse_mapping(value)

    @field_validator("payload_indexes", mode="after")
    @classmethod
    def _valid_indexes(cls, value: dict[str, str]) -> dict[str, str]:
        for key, schema in value.items():
            if not METADATA_KEY.fullmatch(key):
                raise ValueError(f"entry {key!r}: use letters, digits, _ and -, dotted for nested metadata")
            if schema not in PAYLOAD_INDEX_TYPES:
                raise ValueError(f"entry {key!r}: index type {schema!r} is not one of {', '.join(PAYLOAD_INDEX_TYPES)}")
        return value

    @field_validator("ubi_actions", mode="after")
    @classmethod
    def _valid_actions(cls, value: dict[str, str]) -> dict[str, str]:
        for name, kind in value.items():
            if not name or len(name) > 100:
                raise ValueError(f"entry {name!r}: an action name has 1 to 100 characters")
            if kind not in FEEDBACK_TYPES:
                raise ValueError(f"entry {name!r}: {kind!r} is not a feedback type ({', '.join(FEEDBACK_TYPES)})")
        return value

    @field_validator("base_model", mode="after")
    @classmethod
    def _default_model(cls, value: str) -> str:
        return value or packaged_model_path()

    @field_validator("cycle_cron", "adapter_cycle_cron", "retention_cron", mode="after")
    @classmethod
    def _valid_cron(cls, value: str | None) -> str | None:
        if value:
            from apscheduler.triggers.cron import CronTrigger

            CronTrigger.from_crontab(value)  # raises ValueError with the offending field
        return value

    @model_validator(mode="after")
    def _check(self) -> Settings:
        if self.default_k > self.max_k:
            raise ValueError(f"default_k ({self.default_k}) must not exceed max_k ({self.max_k})")
        if self.bulk_backend != self.encoder_backend and "onnx-int8" in (self.bulk_backend, self.encoder_backend):
            raise ValueError(
                f"bulk_encoder_backend {self.bulk_backend!r} and encoder_backend {self.encoder_backend!r} would put "
                "int8 and fp32 vectors in one collection: use the same precision for both (torch and onnx are "
                "both fp32; onnx-int8 only with onnx-int8)"
            )
        overlap = set(self.admin_keys) & set(self.search_keys)
        if overlap:
            raise ValueError("a key may not be both an admin key and a search key")
        if self.train_adapter:  # the old name: one option, so the cycle reads train_frozen_dense only
            self.train_frozen_dense = True
        return self

    @property
    def torch_serving_threads(self) -> int:
        """torch's intra-op threads while serving: every request encodes on its own thread, and torch's default
        of a thread per core for each of them oversubscribes the cores (ONNX Runtime's session pool is shared
        by concurrent calls, so it keeps its default)."""
        return self.serve_threads or max(1, (os.cpu_count() or 2) // 2)

    @property
    def search_threads(self) -> int:
        """Threads of the search pool: CPU-bound searches beyond the cores only queue inside the encoder."""
        return self.search_workers or max(2, os.cpu_count() or 2)

    @property
    def bulk_backend(self) -> str:
        """The backend that encodes the corpus (defaults to the query backend)."""
        return self.bulk_encoder_backend or self.encoder_backend

    # Derived paths: properties, so that changing data_dir moves everything that was not set explicitly.
    @property
    def db_file(self) -> Path:
        """The DuckDB file."""
        return self.duckdb_path or self.data_dir / "flywheel.duckdb"

    @property
    def qdrant_dir(self) -> Path:
        """The Qdrant local-mode folder (unused when `qdrant_url` is set)."""
        return self.qdrant_path or self.data_dir / "qdrant"

    @property
    def models_dir(self) -> Path:
        """The model registry: one folder per version."""
        return self.data_dir / "models"

    @property
    def cycles_dir(self) -> Path:
        """Per-cycle artifacts (pair snapshots)."""
        return self.data_dir / "cycles"

    @property
    def reports_dir(self) -> Path:
        """Promotion reports, one folder per cycle."""
        return self.data_dir / "reports"

    @property
    def auth_enabled(self) -> bool:
        """True when any key is configured; then every route but /healthz needs one."""
        return bool(self.admin_keys or self.search_keys)

    @classmethod
    def load(cls, config_file: Path | str | None = None, **overrides: Any) -> Settings:
        """Build settings from (highest first) overrides, FLYWHEEL_* env vars, then a TOML/YAML file.

        Args:
            config_file: optional `.toml`, `.yaml` or `.yml` file with the same field names.
            **overrides: values that win over everything (e.g. CLI flags).

        Returns:
            The validated settings.

        Raises:
            ConfigError: the file is missing or unreadable, or a value is invalid.
        """
        file_values: dict[str, Any] = {}
        if config_file is not None:
            file_values = _read_config_file(Path(config_file))
        try:
            from_env = cls(**overrides)
        except ValueError as exc:
            raise ConfigError(_first_error(exc)) from exc
        if not file_values:
            return from_env
        # A file value applies only where neither env nor an override set the field.
        explicit = from_env.model_fields_set
        merged = {k: v for k, v in file_values.items() if k not in explicit}
        try:
            return cls(**{**merged, **{k: getattr(from_env, k) for k in explicit}})
        except ValueError as exc:
            raise ConfigError(f"{config_file}: {_first_error(exc)}") from exc


def _read_config_file(path: Path) -> dict[str, Any]:
    """Parse a TOML or YAML config file into a flat dict of setting names."""
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        text = path.read_text(encoding="utf-8")
        if path.suffix == ".toml":
            data = tomllib.loads(text)
        elif path.suffix in (".yaml", ".yml"):
            data = yaml.safe_load(text) or {}
        else:
            raise ConfigError(f"config file must end in .toml, .yaml or .yml: {path}")
    except (tomllib.TOMLDecodeError, yaml.YAMLError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot parse {path}: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a table/mapping of settings")
    data = data.get("flywheel", data)  # allow a [flywheel] table
    unknown = sorted(set(data) - set(Settings.model_fields))
    if unknown:
        raise ConfigError(f"{path}: unknown setting(s): {', '.join(unknown)}")
    return data


def _first_error(exc: ValueError) -> str:
    """One readable line from a pydantic ValidationError."""
    errors = getattr(exc, "errors", None)
    if callable(errors):
        err = errors()[0]
        where = ".".join(str(p) for p in err.get("loc", ())) or "settings"
        return f"{where}: {err.get('msg')}"
    return str(exc)
