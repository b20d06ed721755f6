"""The monitor's web side: a dashboard page with live charts and receptive fields, and Prometheus /metrics."""
