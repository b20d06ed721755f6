"""The network side: the wire format, sockets and CURVE security."""
