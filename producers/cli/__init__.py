"""The `modelbus` command line: the composition root that wires settings, clients and workers."""

from producers.cli.main import app, main

__all__ = ["app", "main"]
