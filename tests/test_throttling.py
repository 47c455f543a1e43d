"""Throttling: a store answering 503 SlowDown / 503 ServerBusy / 429 (a fault-injecting
proxy in front of moto) still completes, with jittered exponential back-off and a
request rate that adapts (botocore's adaptive retry mode); --bwlimit caps a job's
bytes per second with a token bucket in the source gateways."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
from botocore.retries.standard import ExponentialBackoff

from gateway_vm.runtime import TokenBucket
from skyhop.stores.s3 import S3Store
from skyhop.uri import parse_uri
from tests.fixtures.cli import MIB, SMALL_PARTS, run_cli, tree_digest
from tests.fixtures.fault_proxy import FaultProxy, fault_proxy


def _bucket(name: str, files: dict[str, bytes]) -> None:
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket=name)
    for key, body in files.items():
        s3.put_object(Bucket=name, Key=key, Body=body)


def _read(name: str, prefix: str) -> dict[str, bytes]:
    s3 = boto3.client("s3")
    out = {}
    for obj in s3.list_objects_v2(Bucket=name, Prefix=prefix).get("Contents", []):
        out[obj["Key"][len(prefix) :]] = s3.get_object(Bucket=name, Key=obj["Key"])["Body"].read()
    return out


def test_sync_completes_through_slowdowns(moto):
    files = {f"src/f{i}.bin": os.urandom(1000 + i) for i in range(5)}
    files["src/multi.bin"] = os.urandom(11 * MIB)
    _bucket("throttled", files)
    with fault_proxy(moto.endpoint, fail_first=5, fail_every=9) as proxy:
        env = {"AWS_ENDPOINT_URL": proxy.endpoint}
        res = run_cli(
            "sync", "s3://throttled/src/", "s3://throttled/dst/", "--json", *SMALL_PARTS, env=env
        )
        assert res.code == 0, res.stderr
        assert res.report["objects"] == len(files)
        assert proxy.faults >= 5 + (proxy.requests - 5) // 9 - 1
    assert _read("throttled", "dst/") == {k[len("src/") :]: v for k, v in files.items()}


@pytest.fixture
def throttled_store(
    moto, monkeypatch: pytest.MonkeyPatch, request
) -> Iterator[tuple[S3Store, FaultProxy]]:
    status, code = request.param
    # botocore's real back-off (1 s base for throttling), scaled down for a fast test
    monkeypatch.setitem(ExponentialBackoff._DEFAULT_BACKOFF_CONFIG, "throttling_base_scale", 0.01)
    boto3.client("s3").create_bucket(Bucket="busy")
    with fault_proxy(moto.endpoint, fail_first=3, status=status, code=code) as proxy:
        monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.endpoint)
        store = S3Store(parse_uri("s3://busy"), sleep=lambda _s: None)
        yield store, proxy
        store.close()


@pytest.mark.parametrize(
    "throttled_store",
    [(503, "SlowDown"), (503, "ServerBusy"), (429, "TooManyRequests")],
    indirect=True,
    ids=["503-SlowDown", "503-ServerBusy", "429"],
)
def test_store_retries_throttling_answers(throttled_store: tuple[S3Store, FaultProxy]):
    store, proxy = throttled_store
    assert store.client.meta.config.retries["mode"] == "adaptive"
    data = os.urandom(5000)
    store.put("k", data)  # three faults, then through
    assert proxy.faults == 3
    assert store.read_range("k", 0, len(data)) == data
    assert [i.key for i in store.list("")] == ["k"]


def test_token_bucket_caps_the_rate():
    now = [0.0]
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        now[0] += seconds

    bucket = TokenBucket(1000.0, clock=lambda: now[0], sleep=sleep)
    for _ in range(10):
        bucket.take(500)
    # one second's burst is free, the other 4000 bytes take 4 s at 1000 B/s
    assert sum(slept) == pytest.approx(4.0)
    now[0] += 100  # idle: the bucket refills up to one second's worth, not more
    slept.clear()
    bucket.take(1000)
    bucket.take(1000)
    assert sum(slept) == pytest.approx(1.0)
    with pytest.raises(ValueError):
        TokenBucket(0)


def test_bwlimit_transfer_completes(tmp_path: Path):
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    (src / "a.bin").write_bytes(os.urandom(512 * 1024))
    (src / "b.bin").write_bytes(os.urandom(300 * 1024))
    res = run_cli("sync", str(src), str(dst), "--bwlimit", "4MiB", "--json")
    assert res.code == 0, res.stderr
    assert tree_digest(dst) == tree_digest(src)
    res = run_cli("sync", str(src), str(dst), "--bwlimit", "0")
    assert res.code == 2 and "bwlimit" in res.stderr
