"""Fault injection on a real `ffstream run` (slow: run on its own)."""
