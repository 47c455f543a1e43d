"""The per-cloud kits' error translation (skyhop.clouds): botocore's own exception
classes in, the skyhop error family out. Pure functions; the adapters' suites
exercise them against the emulators."""

from __future__ import annotations

from botocore.exceptions import ClientError, EndpointConnectionError, NoRegionError

from skyhop.clouds import aws
from skyhop.crypto import kms
from skyhop.errors import AccessError, NotFoundError, SkyhopError, StoreError, UsageError
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
