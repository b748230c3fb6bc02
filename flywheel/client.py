"""`from flywheel.client import Client` keeps working: the clients live in `flywheel.api.client` and
`flywheel.api.async_client`."""

from flywheel.api.async_client import AsyncClient
from flywheel.api.batcher import BatcherStats
from flywheel.api.client import Client
from flywheel.api.client_core import Retry

__all__ = ["AsyncClient", "BatcherStats", "Client", "Retry"]
