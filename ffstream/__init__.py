"""ffstream: learn from live video with the Forward-Forward algorithm, one worker process per layer."""

__version__ = "0.1.0"
