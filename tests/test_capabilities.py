"""The features table: declared facts from the store, optional protocols from the
methods it has (never the other way round), and the compute and manifest
capabilities declared on their protocols.

The two stores below are minimal in-memory stand-ins written for this test (only
the table is under test, no I/O); the real stores run the same checks against
their emulators in tests/suites/store_suite.py.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path
from typing import Generic, Protocol

import pytest

from skyhop.compute import base as compute_base
from skyhop.compute.azure_vm import AzureComputeProvider
from skyhop.compute.base import (
    ComputeProvider,
    Enrols,
    InstanceIdentities,
    RoutesByRegion,
    gateways_enrol,
)
from skyhop.compute.ec2 import EC2ComputeProvider
from skyhop.compute.gce import GCEComputeProvider
from skyhop.compute.local import LocalComputeProvider
from skyhop.compute.routed import RoutedComputeProvider
from skyhop.queues import base as queues_base
from skyhop.queues.azure_queue import AzureControlQueues
from skyhop.queues.base import InstanceScopedControlQueues, Queue
from skyhop.queues.memory import MemoryControlQueues
from skyhop.queues.pubsub import PubSubControlQueues
from skyhop.queues.sqs import SQSControlQueues
from skyhop.state import base as state_base
from skyhop.state.base import JobsByState
from skyhop.state.sqlite import SQLiteManifest
from skyhop.stores import base as stores_base
from skyhop.stores.base import (
    BaseStore,
    Capabilities,
    ObjectInfo,
    ObjectMeta,
    ServerSideCopier,
    capabilities,
    check_writable,
    is_dir,
)
from skyhop.uri import parse_uri


class _Plain(BaseStore):
    """Required surface only, but declaring extras it does not have."""

    capabilities = Capabilities(multipart=True, server_side_copy=True, directories=True)

    def __init__(self) -> None:
        self.uri = parse_uri("s3://bucket/")

    def region(self) -> str | None:
        return None

    def check_bucket(self) -> None:
        return None

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        return iter(())

    def head(self, key: str) -> ObjectInfo | None:
        return None

    def put(self, key: str, data: bytes, *, meta: ObjectMeta | None = None) -> ObjectInfo:
        return ObjectInfo(key=key, size=len(data))

    def delete(self, key: str) -> None:
        return None


class _Copier(_Plain):
    capabilities = Capabilities(conditional_read=True)

    def can_copy_from(self, src: object) -> bool:
        return True

    def copy_object(
        self,
        src: object,
        src_key: str,
        key: str,
        size: int,
        *,
        meta: ObjectMeta | None = None,
        if_match: str | None = None,
    ) -> ObjectInfo:
        return ObjectInfo(key=key, size=size)

    def copy_part(
        self,
        src: object,
        src_key: str,
        key: str,
        upload_id: str,
        part_number: int,
        offset: int,
        length: int,
        *,
        if_match: str | None = None,
    ) -> str:
        return ""


def test_a_declared_extra_without_its_method_is_not_claimed():
    caps = capabilities(_Plain())
    assert not caps.multipart and not caps.server_side_copy and not caps.directories
    assert not caps.read_into and not caps.delimited_listing


def test_server_side_copy_is_true_exactly_when_the_store_copies():
    store = _Copier()
    assert isinstance(store, ServerSideCopier)
    caps = capabilities(store)
    assert caps.server_side_copy and caps.conditional_read and not caps.multipart


def test_no_directories_means_no_directory_answers():
    store = _Plain()
    assert is_dir(store, "a/") is False
    assert check_writable(store, "a/") is None


@pytest.mark.parametrize(
    ("scheme", "copies"), [("local", False), ("s3", True), ("gs", True), ("az", True)]
)
def test_server_side_copy_comes_from_the_method_never_the_declaration(scheme: str, copies: bool):
    from skyhop.stores import base

    module_name, _, cls_name = base._REGISTRY[scheme].partition(":")
    cls = getattr(__import__(module_name, fromlist=[cls_name]), cls_name)
    assert isinstance(cls.capabilities, Capabilities)
    assert not cls.capabilities.server_side_copy  # never declared by hand
    assert all(hasattr(cls, m) for m in ("can_copy_from", "copy_object", "copy_part")) is copies


@pytest.mark.parametrize(
    ("provider", "events"),
    [
        (LocalComputeProvider, False),
        (EC2ComputeProvider, True),
        (GCEComputeProvider, True),
        (AzureComputeProvider, True),
    ],
)
def test_every_compute_provider_declares_how_gateways_report_ready(provider: type, events: bool):
    assert provider.ready_via_events is events
    assert "ready_via_events" in ComputeProvider.__annotations__


@pytest.mark.parametrize(
    ("provider", "names"),
    [
        (LocalComputeProvider, False),  # a pid is no identity a queue policy can name
        (EC2ComputeProvider, True),
        (GCEComputeProvider, False),  # their control queues are Pub/Sub and Azure
        (AzureComputeProvider, False),  # Storage Queues, not scoped to instances
    ],
)
def test_only_ec2_names_the_instances_a_control_queue_is_closed_to(provider: type, names: bool):
    assert issubclass(provider, InstanceIdentities) is names
    assert issubclass(RoutedComputeProvider, InstanceIdentities)  # asks the cloud's own
    assert issubclass(SQSControlQueues, InstanceScopedControlQueues)
    for other in (MemoryControlQueues, AzureControlQueues, PubSubControlQueues):
        assert not issubclass(other, InstanceScopedControlQueues)


def test_manifest_job_index_is_an_optional_protocol(tmp_path):
    assert not isinstance(SQLiteManifest(tmp_path / "m.db"), JobsByState)
    from skyhop.state.dynamodb import DynamoDBManifest

    assert issubclass(DynamoDBManifest, JobsByState)


@pytest.mark.parametrize("scheme", ["s3", "gs", "az"])
def test_a_store_copying_whole_objects_only_refuses_a_part(scheme: str):
    """copies_ranges False (every object one chunk) goes with CopiesWholeObjects'
    copy_part, which refuses a byte range instead of copying a wrong one."""
    from skyhop.errors import UsageError
    from skyhop.stores import base

    module_name, _, cls_name = base._REGISTRY[scheme].partition(":")
    cls = getattr(__import__(module_name, fromlist=[cls_name]), cls_name)
    whole = issubclass(cls, base.CopiesWholeObjects)
    assert whole is not cls.capabilities.copies_ranges
    if whole:
        store = object.__new__(cls)  # copy_part reads nothing of the store
        with pytest.raises(UsageError, match="whole objects only"):
            store.copy_part(store, "a.bin", "b.bin", "u-1", 1, 0, 10)


def _provider(cls: type) -> object:
    """A provider instance for reading its class's declarations (nothing connects)."""
    return object.__new__(cls)


@pytest.mark.parametrize(
    ("provider", "enrolling"),
    [
        (LocalComputeProvider, False),
        (EC2ComputeProvider, True),
        (GCEComputeProvider, True),
        (AzureComputeProvider, True),
    ],
)
def test_a_provider_whose_vms_enrol_says_so_through_the_enrols_protocol(
    provider: type, enrolling: bool
):
    assert isinstance(_provider(provider), Enrols) is enrolling
    assert gateways_enrol(_provider(provider), "us-east-1") is enrolling


def test_a_routed_provider_asks_the_provider_of_each_region_whether_it_enrols():
    routed = RoutedComputeProvider(
        {"aws": _provider(EC2ComputeProvider), "local": _provider(LocalComputeProvider)}
    )
    assert isinstance(routed, RoutesByRegion) and not isinstance(routed, Enrols)
    assert gateways_enrol(routed, "aws:us-east-1") is True
    assert gateways_enrol(routed, "local:here") is False


class _Declares:
    """A provider with ``enrols`` declared False: declared, not merely present."""

    enrols = False


def test_an_enrols_declared_false_is_false():
    assert isinstance(_Declares(), Enrols)
    assert gateways_enrol(_Declares(), "us-east-1") is False


# ------------------------------------------------------------ no probes

_PROTOCOL_MODULES = (compute_base, stores_base, state_base, queues_base)
#: each module's required protocol: its data members are declared facts too, its
#: methods are not capabilities (``args.delete`` of argparse is no store's delete)
_REQUIRED = {ComputeProvider, stores_base.ObjectStore, state_base.ManifestStore, Queue}


def _members(proto: type) -> set[str]:
    names: set[str] = set()
    for klass in proto.__mro__:
        if klass in (object, Protocol, Generic):
            continue
        names |= set(getattr(klass, "__annotations__", {}))
        names |= {n for n, v in vars(klass).items() if callable(v) and not n.startswith("_")}
    return names


def capability_names() -> set[str]:
    """Every name a capability is declared under: the members of the optional
    protocols, the data members of the required ones and the store Capabilities."""
    names = set(Capabilities.model_fields)
    for module in _PROTOCOL_MODULES:
        for value in vars(module).values():
            if not (isinstance(value, type) and getattr(value, "_is_protocol", False)):
                continue
            if value in _REQUIRED:
                names |= set(getattr(value, "__annotations__", {}))
            else:
                names |= _members(value)
    return names - {"name", "uri"}


def _probes(source: str, names: set[str]) -> list[tuple[int, str]]:
    """``getattr(x, "NAME", ...)`` / ``hasattr(x, "NAME")`` calls naming a capability."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in ("getattr", "hasattr")
            and len(node.args) >= 2
            and isinstance(node.args[1], ast.Constant)
            and node.args[1].value in names
        ):
            found.append((node.lineno, node.args[1].value))
    return found


def test_the_scan_knows_the_capabilities_and_finds_a_probe():
    names = capability_names()
    assert {"enrols", "provider", "ready_via_events", "is_dir", "iter_range_into"} <= names
    assert {"iter_jobs", "accepts_buffers", "check_writable", "running"} <= names
    probe = (
        'route = getattr(compute, "provider", None)\n'
        'ok = bool(getattr(provider, "enrols", False)) or hasattr(store, "is_dir")\n'
    )
    assert sorted(_probes(probe, names)) == [(1, "provider"), (2, "enrols"), (2, "is_dir")]


def test_no_code_probes_for_a_capability():
    """Capabilities are declared (a Capabilities entry, a protocol member, an optional
    protocol checked with isinstance), never found by getattr or hasattr."""
    names = capability_names()
    root = Path(__file__).resolve().parents[1]
    found = [
        f"{path.relative_to(root)}:{line}: {name}"
        for top in ("shared/skyhop", "gateway_vm", "functions")
        for path in sorted((root / top).rglob("*.py"))
        for line, name in _probes(path.read_text(), names)
    ]
    assert found == []
