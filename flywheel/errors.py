"""Named exceptions of the domain; translated to HTTP statuses and exit codes only at the edges."""


class FlywheelError(Exception):
    """Base class: every error flywheel raises on purpose."""


class ConfigError(FlywheelError):
    """A setting or a config file is wrong."""


class InvalidInput(FlywheelError):
    """Client input breaks a rule (a limit, a format); the message says what to fix."""


class PayloadTooLarge(InvalidInput):
    """A batch or body is over its configured limit."""


class NotFound(FlywheelError):
    """A document, model version, cycle or report does not exist."""


class Conflict(FlywheelError):
    """The request conflicts with the current state (e.g. a cycle is already running)."""


class StoreLocked(FlywheelError):
    """Another process holds the DuckDB file or the Qdrant folder (usually `flywheel serve`)."""


class DataFormatError(InvalidInput):
    """A data file (pairs, corpus, qrels) has a wrong format; the message names the file, line or column."""


class TrainingError(FlywheelError):
    """Training failed or was cancelled; the serving model is untouched."""


class IndexMismatch(FlywheelError):
    """The vector index is inconsistent (e.g. a point count does not match the document count)."""


class ModelLoadError(ConfigError, InvalidInput):
    """A model cannot be loaded: a configuration error for a server, bad input for an offline command."""


class Cancelled(FlywheelError):
    """A cycle was stopped between stages (the server is shutting down)."""


class ServerUnavailable(FlywheelError):
    """The flywheel server could not be reached, or kept answering 5xx, through all of a client's retries."""
