"""Shared fixtures. Service fixtures live in tests/fixtures/ and are registered here."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fixtures.emulators import (  # noqa: F401
    azure_container,
    azurite_server,
    gcs_bucket,
    gcs_server,
    pubsub_server,
)
from tests.fixtures.services import moto, moto_server  # noqa: F401


@pytest.fixture(autouse=True)
def skyhop_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Every test gets its own state directory."""
    home = tmp_path / "skyhop-home"
    monkeypatch.setenv("SKYHOP_HOME", str(home))
    yield home


def pytest_configure(config: pytest.Config) -> None:
    os.environ.setdefault("SKYHOP_TESTING", "1")
    # boto3 must never probe the instance-metadata address from a test
    os.environ["AWS_EC2_METADATA_DISABLED"] = "true"
