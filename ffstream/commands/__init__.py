"""One module per CLI command; cli.py only parses."""
