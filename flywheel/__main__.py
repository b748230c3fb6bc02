"""Allow `python -m flywheel`."""

from flywheel.cli import main

main()
