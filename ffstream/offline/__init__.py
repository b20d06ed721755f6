"""Work on a finished stack: evaluation, probes, scores, filters and the in-process reference."""
