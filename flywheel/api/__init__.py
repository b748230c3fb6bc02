"""The HTTP API: the app factory, one router per noun, schemas, Prometheus metrics, and the Python client."""
