"""`from flywheel.client import Client` keeps working: the client lives in `flywheel.api.client`."""

from flywheel.api.client import Client

__all__ = ["Client"]
