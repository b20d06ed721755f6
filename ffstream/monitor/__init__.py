"""Watching a run: the terminal dashboard, Prometheus, TensorBoard, previews, health files and the web page."""
