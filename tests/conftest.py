"""Shared fixtures. Service fixtures live in tests/fixtures/ and are registered here."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fixtures.cdk import cdk_default, cdk_sqs  # noqa: F401 - pytest fixtures, registered by importing them
from tests.fixtures.emulators import (  # noqa: F401 - pytest fixtures, registered by importing them
    azure_container,
    azurite_server,
    firestore_server,
    gcs_bucket,
    gcs_server,
    pubsub_server,
)
from tests.fixtures.services import moto, moto_server  # noqa: F401 - pytest fixtures, registered by importing them


@pytest.fixture(autouse=True)
def skyhop_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Every test gets its own state directory."""
    home = tmp_path / "skyhop-home"
    monkeypatch.setenv("SKYHOP_HOME", str(home))
    yield home


def pytest_configure(config: pytest.Config) -> None:
    # pytest-xdist's workers start with SIGINT ignored, and an ignored signal stays
    # ignored across exec: every CLI a test interrupts (the Ctrl-C tests) would then
    # run on to the end. Give the worker, and so what it starts, the default.
    if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    os.environ.setdefault("SKYHOP_TESTING", "1")
    # fault-injection hooks (SKYHOP_TEST_HOOKS) work only in processes the suite starts
    os.environ["SKYHOP_TEST_SUITE"] = "1"
    # boto3 must never probe the instance-metadata address from a test
    os.environ["AWS_EC2_METADATA_DISABLED"] = "true"
