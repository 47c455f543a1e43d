"""The ControlQueues suite on every implementation: in memory, SQS on moto, Azure
Storage Queues on Azurite and Pub/Sub on its emulator."""

from __future__ import annotations

import uuid

import pytest

from skyhop.queues.base import open_control_queues
from tests.suites.control_queue_suite import ControlQueueSuite


def _prefix() -> str:
    return f"t{uuid.uuid4().hex[:8]}"


class TestMemoryControlQueues(ControlQueueSuite):
    @pytest.fixture
    def queues(self):
        return open_control_queues(f"memory://{_prefix()}")


class TestSQSControlQueues(ControlQueueSuite):
    @pytest.fixture
    def queues(self, moto):
        return open_control_queues(f"sqs://{_prefix()}")


class TestAzureControlQueues(ControlQueueSuite):
    @pytest.fixture
    def queues(self, azurite_server):
        return open_control_queues(f"azq://devstoreaccount1/{_prefix()}")


class TestPubSubControlQueues(ControlQueueSuite):
    @pytest.fixture
    def queues(self, pubsub_server):
        return open_control_queues(f"pubsub://{pubsub_server.project}/{_prefix()}")
