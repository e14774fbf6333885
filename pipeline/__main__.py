"""`python -m pipeline` is the `gruwatch` command."""

from __future__ import annotations

from pipeline.cli import main

main()
