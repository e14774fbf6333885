"""The `gruwatch` command line (``main`` is the entry point)."""

from __future__ import annotations

from pipeline.cli.main import cli, main

__all__ = ["cli", "main"]
