"""Allow `python -m commuter`."""

from commuter.cli import main

main()
