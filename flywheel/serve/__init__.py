"""The request path: the DuckDB store (all SQL), the Qdrant index, the Service that serves and swaps, versions."""
