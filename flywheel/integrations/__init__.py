"""Retrievers for chatbot frameworks on top of the Python client: `langchain` and `llama_index` (optional extras).

Nothing here is imported by the rest of flywheel, and each module imports its framework only when imported
itself, so `pip install flywheel` works without either framework.
"""
