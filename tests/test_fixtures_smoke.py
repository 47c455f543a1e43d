import socket
import time

import boto3
import pytest

from tests.fixtures import ec2_boot as ec2_boot_fixture

ec2_boot = ec2_boot_fixture.ec2_boot


def test_moto_server_serves_s3(moto):
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket="smoke")
    s3.put_object(Bucket="smoke", Key="a b/ü.txt", Body=b"hello")
    assert s3.get_object(Bucket="smoke", Key="a b/ü.txt")["Body"].read() == b"hello"


def test_a_vm_address_answers_nothing_until_its_vm_is_up(ec2_boot):
    """An address the cloud hands out reaches its VM or nothing. Between the launch
    and the boot, a caller (the CLI enrolling its gateways) is refused at once and
    retries; it never reaches what this host's own network has at that address
    (here: an egress proxy answering any TLS request with an empty 404)."""
    started = time.monotonic()
    with pytest.raises(OSError):
        socket.create_connection(("54.214.201.202", 7401), 5).close()
    assert time.monotonic() - started < 2  # refused, not a timeout
