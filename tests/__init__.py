"""Test package; imported before conftest, so the environment below is set before any hub client loads."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never reach a model hub
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
