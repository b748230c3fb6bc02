"""flywheel: a data flywheel for embedding models behind a RAG chatbot."""

__version__ = "0.1.0"
