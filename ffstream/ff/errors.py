"""ff's errors, apart from the modules that raise them: the CLI catches them without importing torch."""


class CheckpointError(Exception):
    """A checkpoint that cannot be used; the message is one line for the user."""
