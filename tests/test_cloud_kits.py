"""The per-cloud kits' error translation (skyhop.clouds): botocore's own exception
classes in, the skyhop error family out. Pure functions; the adapters' suites
exercise them against the emulators."""

from __future__ import annotations

import ast
from pathlib import Path

from botocore.exceptions import ClientError, EndpointConnectionError, NoRegionError

from skyhop.clouds import aws
from skyhop.crypto import kms
from skyhop.errors import (
    AccessError,
    NotFoundError,
    SkyhopError,
    StoreError,
    UsageError,
    first_line,
)
from skyhop.queues import sqs


def _client_error(code: str, status: int) -> ClientError:
    return ClientError(
        {
            "Error": {"Code": code, "Message": f"{code} said\nsecond line"},
            "ResponseMetadata": {"HTTPStatusCode": status},
        },
        "AnyOperation",
    )


def test_classify_reads_access_not_found_and_retryable():
    assert isinstance(
        aws.classify(_client_error("AccessDenied", 403), "x", StoreError), AccessError
    )
    missing = aws.classify(_client_error("InvalidGroup.NotFound", 400), "x", StoreError)
    assert isinstance(missing, NotFoundError)
    busy = aws.classify(_client_error("InternalError", 503), "x", StoreError)
    assert isinstance(busy, StoreError) and busy.retryable
    assert str(busy) == "x: InternalError: InternalError said"  # first line only


def test_translator_routes_client_errors_and_names_the_missing_region():
    seen: list[str] = []

    def codes(exc: ClientError, what: str) -> SkyhopError:
        seen.append(exc.response["Error"]["Code"])
        return UsageError(f"{what}: by the service's codes")

    translate = aws.translator(codes, no_region="no AWS region: set AWS_REGION")
    assert str(translate(_client_error("Throttling", 400), "put")) == "put: by the service's codes"
    assert seen == ["Throttling"]
    no_region = translate(NoRegionError(), "put")
    assert isinstance(no_region, UsageError)
    assert str(no_region) == "put: no AWS region: set AWS_REGION"
    down = translate(EndpointConnectionError(endpoint_url="http://127.0.0.1:9"), "put")
    assert type(down) is StoreError and down.retryable


def test_sqs_and_kms_say_how_to_give_a_region():
    assert "sqs://NAME?region=R" in str(sqs._translate(NoRegionError(), "send"))
    assert "key ARN" in str(kms._translate(NoRegionError(), "KMS: wrap"))


def test_first_line_of_a_message_and_of_none():
    assert first_line(ValueError("not YAML\n  line 2")) == "not YAML"
    assert first_line(ValueError("\n  indented first\nsecond")) == "indented first"
    assert first_line(TimeoutError()) == "TimeoutError"  # no message: its type, never ""
    assert first_line("") == ""
    assert first_line("x" * 400) == "x" * 300
    assert first_line("x" * 400, limit=200) == "x" * 200


def _first_lines_taken(source: str) -> list[int]:
    """Lines that take ``<something>.splitlines()[0]`` themselves."""
    return [
        node.lineno
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.Subscript)
        and isinstance(node.value, ast.Call)
        and isinstance(node.value.func, ast.Attribute)
        and node.value.func.attr == "splitlines"
        and isinstance(node.slice, ast.Constant)
        and node.slice.value == 0
    ]


def test_the_first_line_of_an_error_is_taken_by_errors_first_line_only():
    assert _first_lines_taken('x = f"{str(exc).splitlines()[0]}"\n') == [1]
    root = Path(__file__).resolve().parents[1]
    found = [
        f"{path.relative_to(root)}:{line}"
        for top in ("shared/skyhop", "gateway_vm", "functions")
        for path in sorted((root / top).rglob("*.py"))
        if path != root / "shared/skyhop/errors.py"
        for line in _first_lines_taken(path.read_text())
    ]
    assert found == []
