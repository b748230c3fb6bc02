"""The typer app every command registers on, its shared options, and the one place errors become exit codes."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console

from flywheel.config import Settings
from flywheel.errors import ConfigError, Conflict, FlywheelError, InvalidInput, NotFound, StoreLocked

app = typer.Typer(
    help="flywheel: retrieval that gets better from its users' clicks.",
    no_args_is_help=True,
    add_completion=False,
)
console = Console(soft_wrap=True)
err_console = Console(stderr=True, soft_wrap=True)

# Exit codes: 1 other error, 2 bad input or config, 3 data dir in use, 4 not found, 5 busy (a cycle runs: retry).
EXIT_CODES: list[tuple[type[Exception], int]] = [
    (InvalidInput, 2),
    (ConfigError, 2),
    (StoreLocked, 3),
    (NotFound, 4),
    (Conflict, 5),
    (FlywheelError, 1),
]
T = TypeVar("T")

ConfigOpt = Annotated[
    Path | None, typer.Option("--config", "-c", help="TOML or YAML settings file (env vars win over it).")
]
DataDirOpt = Annotated[Path | None, typer.Option("--data-dir", help="Data folder (default ./flywheel-data).")]


def settings_from(config: Path | None, **overrides: Any) -> Settings:
    """Settings from the file, env and the given non-None CLI flags."""
    return Settings.load(config, **{k: v for k, v in overrides.items() if v is not None})


def run_command(fn: Callable[[], T]) -> T:
    """Call fn, turning flywheel errors into one line on stderr and an exit code."""
    try:
        return fn()
    except FlywheelError as exc:
        code = next(c for t, c in EXIT_CODES if isinstance(exc, t))
        err_console.print(f"[red]error:[/red] {exc}", highlight=False, soft_wrap=True)
        raise typer.Exit(code) from None


def basic_logging(level: str) -> None:
    logging.basicConfig(level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def print_json(data: Any) -> None:
    """Print JSON to stdout (machine-readable output of commands like `evaluate`)."""
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")
