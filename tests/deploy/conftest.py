"""tests/deploy: the real docker-compose stack (marker `compose`; select it with `pytest -m compose tests/deploy -s`)."""

from __future__ import annotations


def pytest_configure(config):
    config.addinivalue_line("markers", "compose: builds the image and runs docker-compose.yml under Docker (minutes)")
