"""The event store's tables, as numbered migrations: each runs once, in order, when a store opens, so a data
dir written by an older version opens with every table and column the code expects."""

from __future__ import annotations

# Numbered migrations; each runs once, in order, inside a transaction, and is recorded in schema_migrations.
MIGRATIONS: list[tuple[int, str, str]] = [
    (
        1,
        "documents, searches, impressions, events",
        """
        CREATE TABLE documents (
            id VARCHAR PRIMARY KEY, text VARCHAR NOT NULL, metadata JSON, updated_at TIMESTAMP NOT NULL);
        CREATE TABLE document_deletions (id VARCHAR NOT NULL, deleted_at TIMESTAMP NOT NULL);
        CREATE TABLE searches (
            search_id VARCHAR PRIMARY KEY, ts TIMESTAMP NOT NULL, query VARCHAR NOT NULL, k INTEGER NOT NULL,
            model_version VARCHAR NOT NULL, user_id VARCHAR, session_id VARCHAR);
        CREATE TABLE impressions (
            search_id VARCHAR NOT NULL, rank INTEGER NOT NULL, doc_id VARCHAR NOT NULL, score DOUBLE NOT NULL);
        CREATE TABLE events (
            event_id VARCHAR PRIMARY KEY, search_id VARCHAR NOT NULL, doc_id VARCHAR NOT NULL,
            type VARCHAR NOT NULL, ts TIMESTAMP NOT NULL, received_at TIMESTAMP NOT NULL);
        CREATE INDEX impressions_search ON impressions (search_id);
        """,
    ),
    (
        2,
        "cycles and the cycle lock",
        """
        CREATE TABLE cycles (
            cycle_id VARCHAR PRIMARY KEY, trigger VARCHAR NOT NULL, state VARCHAR NOT NULL, stage VARCHAR,
            started_at TIMESTAMP NOT NULL, finished_at TIMESTAMP, error VARCHAR, incumbent VARCHAR,
            candidate VARCHAR, window_end TIMESTAMP);
        CREATE TABLE cycle_lock (
            id INTEGER PRIMARY KEY, cycle_id VARCHAR NOT NULL, owner VARCHAR NOT NULL,
            acquired_at TIMESTAMP NOT NULL, heartbeat_at TIMESTAMP NOT NULL);
        CREATE INDEX events_received ON events (received_at);
        """,
    ),
    (
        3,
        "query vectors with each search; the kind of each cycle",
        # The base model's query vector (float16 bytes, 768 B at 384 dims) and the base version that made it,
        # so adapter cycles train on vectors the serving path already computed. NULL for older rows.
        """
        ALTER TABLE searches ADD COLUMN query_vector BLOB;
        ALTER TABLE searches ADD COLUMN vector_version VARCHAR;
        ALTER TABLE cycles ADD COLUMN kind VARCHAR;
        """,
    ),
    (
        4,
        "the metadata filter of each search",
        # JSON of the search's filter (NULL: unfiltered), so evaluation can re-apply it and reviewers see it.
        """
        ALTER TABLE searches ADD COLUMN filter VARCHAR;
        """,
    ),
    (
        5,
        "online tests: the experiment and arm of each search, the team of each impression, shadow rankings",
        # experiment: the cycle id of the online test the search took part in (NULL: none ran); arm:
        # "interleaved" (both rankers made the list), "incumbent" (outside the interleaved share) or "shadow";
        # outside a test (experiment NULL), "explore" marks a search whose last positions explored.
        # team: which ranker contributed an interleaved impression. shadow_rankings: what the challenger would
        # have shown (doc ids as JSON, best first) and how many of the shown top k it shares.
        """
        ALTER TABLE searches ADD COLUMN experiment VARCHAR;
        ALTER TABLE searches ADD COLUMN arm VARCHAR;
        ALTER TABLE impressions ADD COLUMN team VARCHAR;
        CREATE TABLE shadow_rankings (
            search_id VARCHAR NOT NULL, experiment VARCHAR NOT NULL, doc_ids JSON NOT NULL, overlap INTEGER NOT NULL);
        """,
    ),
]

__all__ = ["MIGRATIONS"]
