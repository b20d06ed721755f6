"""The `ffstream` subcommands, one module each; cli.py only parses the flags and calls them."""


class UserError(Exception):
    """Anything the user can fix; cli.main() prints it on one line and exits 2."""
