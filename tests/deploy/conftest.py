"""tests/deploy: the real docker-compose stack and the Kubernetes manifests under Docker (marker `compose`; select
them with `pytest -m compose tests/deploy -s`)."""

from __future__ import annotations


def pytest_configure(config):
    config.addinivalue_line("markers", "compose: builds the image and runs containers under real Docker (minutes)")
