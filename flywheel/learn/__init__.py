"""Training: fine-tuning with sentence-transformers (in a child process) and query adapters on cached vectors."""
