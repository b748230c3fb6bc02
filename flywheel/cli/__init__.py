"""Command line: a thin typer layer over the library; errors become one readable line and an exit code.

`app` lives in `flywheel.cli.app`; importing the command modules registers their commands on it.
"""

from __future__ import annotations

from flywheel.cli import lab, ops
from flywheel.cli.app import app
from flywheel.cli.ops import check_bind

__all__ = ["app", "check_bind", "lab", "main", "ops"]


def main() -> None:
    """Console-script entry point."""
    app()
