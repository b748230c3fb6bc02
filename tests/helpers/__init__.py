"""Test helpers: factories for data, a tiny model, servers, cycles and encoders (fixtures live in conftest.py)."""
