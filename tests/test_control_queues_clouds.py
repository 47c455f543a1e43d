"""Per-gateway control queues on Azure Storage Queue (Azurite) and Pub/Sub (the Google
Cloud CLI's emulator, skipped where it is not installed): queues made per gateway,
a ControlMessage round trip through the URI a gateway opens, the reaper's listing,
teardown, and valid names for long or odd ids."""

from __future__ import annotations

import re
import uuid

import pytest
from pydantic import TypeAdapter

from skyhop.errors import NotFoundError, UsageError
from skyhop.models import ControlMessage, DrainMessage
from skyhop.queues.azure_queue import (
    AzureControlQueues,
    AzureQueue,
    azure_control_queue_name,
    parse_azq,
)
from skyhop.queues.base import open_control_queues, open_queue
from skyhop.queues.pubsub import (
    PubSubControlQueues,
    PubSubQueue,
    parse_pubsub,
    pubsub_control_queue_name,
)
from tests.suites.control_queue_suite import chunks_message

ACCOUNT = "devstoreaccount1"
_AZ_NAME = re.compile(r"^(?!.*--)[a-z0-9][a-z0-9\-]{1,61}[a-z0-9]$")
_MESSAGE: TypeAdapter[ControlMessage] = TypeAdapter(ControlMessage)


def _round_trip(uri: str, job_id: str) -> None:
    """What the control plane sends arrives, as the same model, through ``open_queue``
    (the gateway's side: gateway_vm.control_queue)."""
    sent = [chunks_message(job_id), DrainMessage()]
    gateway_side = open_queue(uri)
    got = []
    for _ in range(20):
        got += gateway_side.receive(max_messages=10, wait_seconds=2 if not got else 0)
        if len(got) >= len(sent):
            break
    assert [_MESSAGE.validate_json(m.body) for m in got] == sent
    for message in got:
        gateway_side.ack(message)
    assert gateway_side.receive(max_messages=10, wait_seconds=0) == []


LONG_JOB = "j-" + "0123456789abcdef" * 4
ODD_JOB = "J_Upper.Case"


# ---------------------------------------------------------------- Azure names


@pytest.mark.parametrize(
    ("job_id", "gateway_id"),
    [
        ("j-0123456789abcdef", "gw-j-0123456789abcdef-a2-h1-3"),
        (LONG_JOB, f"gw-{LONG_JOB}-" + "x" * 200),
        (ODD_JOB, "GW__1"),
        ("j--1", "-g-"),
    ],
)
def test_azure_control_queue_names_are_valid(job_id: str, gateway_id: str) -> None:
    name = azure_control_queue_name("skyhop-ctl", job_id, gateway_id)
    assert _AZ_NAME.match(name), name
    assert name.startswith("skyhop-ctl-")
    assert parse_azq(f"azq://{ACCOUNT}/{name}")[1] == name


def test_azure_control_queue_names_do_not_collide() -> None:
    names = {
        azure_control_queue_name("skyhop-ctl", job, gw)
        for job in (LONG_JOB, LONG_JOB + "0", "j_1", "j-1", "J-1")
        for gw in ("g" * 100, "g" * 99, "gw-a", "gw_a", "GW-A")
    }
    assert len(names) == 25
    short = azure_control_queue_name("skyhop-ctl", "j-0123", "gw-j-0123-a2-h1-3")
    assert short == "skyhop-ctl-j-0123-a2-h1-3"  # readable when nothing needs hashing


def test_pubsub_control_queue_names_are_valid() -> None:
    for job, gw in [(LONG_JOB, "g" * 300), ("j-1", "gw/with/slash"), ("j-1", "gw-j-1-a0")]:
        name = pubsub_control_queue_name("skyhop-ctl", job, gw)
        assert parse_pubsub(f"pubsub://p-project/{name}")[1] == name
    assert pubsub_control_queue_name("skyhop-ctl", "j-1", "gw-j-1-a0") == "skyhop-ctl-j-1--a0"


@pytest.mark.parametrize(
    "uri",
    [
        "azq://",
        "azq://devstoreaccount1",
        "azq://devstoreaccount1/Bad_Prefix",
        "azq://devstoreaccount1/a--b",
        "azq://devstoreaccount1/" + "p" * 30,
        "azq://BAD/skyhop-ctl",
        "azq://devstoreaccount1/a/b",
        "pubsub://",
        "pubsub://p-project",
        "pubsub://p-project/a--b",
        "pubsub://p-project/1abc",
        "pubsub://p-project/a/b",
        "pubsub://p-project/skyhop-ctl?x=1",
    ],
)
def test_bad_cloud_control_queue_uris_are_one_line_usage_errors(uri: str) -> None:
    with pytest.raises(UsageError) as info:
        open_control_queues(uri)
    assert "\n" not in str(info.value) and uri in str(info.value)


# ---------------------------------------------------------------- Azurite


def test_azure_control_queues_on_azurite(azurite_server) -> None:
    prefix = f"t{uuid.uuid4().hex[:8]}"
    queues = open_control_queues(f"azq://{ACCOUNT}/{prefix}")
    assert isinstance(queues, AzureControlQueues)
    a1 = queues.create("j-a", "gw-j-a-a1-h0-0")
    assert a1 == f"azq://{ACCOUNT}/{prefix}-j-a-a1-h0-0"
    assert queues.create("j-a", "gw-j-a-a1-h0-0") == a1  # idempotent
    long_uri = queues.create(LONG_JOB, f"gw-{LONG_JOB}-" + "z" * 90)
    odd_uri = queues.create(ODD_JOB, "GW_odd")
    b1 = queues.create("j-a-b", "gw-j-a-b-a1")  # its name starts like j-a's queues
    assert len({a1, long_uri, odd_uri, b1}) == 4

    control_side = queues.open(a1)
    assert isinstance(control_side, AzureQueue) and queues.open(a1) is control_side
    control_side.send_batch(
        [chunks_message("j-a").model_dump_json(), DrainMessage().model_dump_json()]
    )
    _round_trip(a1, "j-a")
    queues.open(long_uri).send(DrainMessage().model_dump_json())
    assert _MESSAGE.validate_json(open_queue(long_uri).receive(wait_seconds=2)[0].body) == (
        DrainMessage()
    )

    assert queues.jobs() == {"j-a", LONG_JOB, ODD_JOB, "j-a-b"}
    assert queues.delete_job("j-a", [a1]) == 1
    assert queues.jobs() == {LONG_JOB, ODD_JOB, "j-a-b"}  # j-a-b shares the name prefix
    assert queues.delete_job("j-a", [a1]) == 0  # idempotent
    with pytest.raises(NotFoundError):
        queues.open(a1).receive()  # a stale URI does not bring its queue back
    assert queues.delete_job(LONG_JOB) == 1  # found by the listing alone
    assert queues.delete_job(ODD_JOB) == 1
    assert queues.delete_job("j-a-b") == 1
    assert queues.jobs() == set()


# ---------------------------------------------------------------- Pub/Sub emulator


def test_pubsub_control_queues_on_the_emulator(pubsub_server) -> None:
    project = pubsub_server.project
    prefix = f"t{uuid.uuid4().hex[:8]}"
    queues = open_control_queues(f"pubsub://{project}/{prefix}")
    assert isinstance(queues, PubSubControlQueues)
    a1 = queues.create("j-a", "gw-j-a-a1-h0-0")
    assert a1 == f"pubsub://{project}/{prefix}-j-a--a1-h0-0"
    assert queues.create("j-a", "gw-j-a-a1-h0-0") == a1
    long_uri = queues.create(LONG_JOB, f"gw-{LONG_JOB}-" + "z" * 300)
    b1 = queues.create("j-b", "gw-j-b-a1")

    control_side = queues.open(a1)
    assert isinstance(control_side, PubSubQueue) and queues.open(a1) is control_side
    # sent before the gateway ever opens its queue: the subscription holds it
    control_side.send_batch(
        [chunks_message("j-a").model_dump_json(), DrainMessage().model_dump_json()]
    )
    _round_trip(a1, "j-a")
    queues.open(long_uri).send(DrainMessage().model_dump_json())
    assert _MESSAGE.validate_json(open_queue(long_uri).receive(wait_seconds=2)[0].body) == (
        DrainMessage()
    )

    assert queues.jobs() == {"j-a", LONG_JOB, "j-b"}
    assert queues.delete_job("j-a", [a1]) == 1
    assert queues.jobs() == {LONG_JOB, "j-b"}
    assert queues.delete_job("j-a", [a1]) == 0
    with pytest.raises(NotFoundError):
        queues.open(a1).send("x")
    assert queues.delete_job(LONG_JOB) == 1
    assert queues.delete_job("j-b", [b1]) == 1
    assert queues.jobs() == set()


# ---------------------------------------------------------------- functions' default


@pytest.mark.parametrize(
    ("settings", "expected"),
    [
        (
            {"compute": "gcp", "events_queue": "pubsub://p-events/ev"},
            "pubsub://p-events/skyhop-ctl",
        ),
        ({"compute": "gcp", "compute_options": {"project": "p-opt"}}, "pubsub://p-opt/skyhop-ctl"),
        ({"compute": "azure", "events_queue": "azq://acct1/events"}, "azq://acct1/skyhop-ctl"),
        ({"compute": "azure"}, None),
        ({"compute": "local"}, None),
        ({"compute": "gcp", "control_queues": "memory://mine"}, "memory://mine"),
    ],
)
def test_functions_default_control_queues_per_compute(settings: dict, expected: str | None) -> None:
    from functions.common import Settings, default_control_queues

    found = default_control_queues(Settings.model_validate(settings))
    assert found == expected
    if found:
        open_control_queues(found)  # a URI the registry takes
