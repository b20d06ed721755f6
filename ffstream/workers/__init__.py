"""One module per worker kind. Each worker is a class that can run in a thread, a process or a test."""
