"""Issue 19 item 12: fault-injection hooks are inert outside the test suite.

``SKYHOP_TEST_HOOKS`` makes gateways and the direct path flip bits, drop chunks
or sleep. Before, any process with the variable set obeyed it, and any gateway
obeyed the hooks in its configuration: a function host with the variable set
(or a configuration someone could write) corrupted transfers on purpose. Now
hooks work only in processes started by the test suite (``SKYHOP_TEST_SUITE``,
set by tests/conftest.py), and a gateway drops the hooks its configuration
carries otherwise. Real CLI and gateway processes.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from skyhop.models import GatewayConfig, GatewayRole
from tests.fixtures.cli import GATEWAYS, SMALL_PARTS, awkward_tree, run_cli, tree_digest

OUTSIDE = {"SKYHOP_TEST_SUITE": ""}  # a process the test suite did not start


@pytest.mark.parametrize(
    ("hook", "path"),
    [("direct:flip_plain=2", []), ("source:flip_wire=2", GATEWAYS)],
    ids=["direct", "gateways"],
)
def test_hooks_are_inert_in_a_process_the_suite_did_not_start(
    tmp_path: Path, hook: str, path: list[str]
) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    awkward_tree(src)
    res = run_cli(
        "cp", "-r", str(src), str(dst), "--json", *SMALL_PARTS, *path,
        env={"SKYHOP_TEST_HOOKS": hook, **OUTSIDE},
    )  # fmt: skip
    assert res.code == 0, res.stderr
    assert res.report["state"] == "succeeded"
    assert res.report["chunks_resent"] == 0  # no bit was flipped: the hook did nothing
    assert tree_digest(dst) == tree_digest(src)
    # the same hook in a process the suite started does flip bits (and they are caught)
    again = run_cli(
        "cp", "-r", str(src), str(tmp_path / "dst2"), "--json", *SMALL_PARTS, *path,
        env={"SKYHOP_TEST_HOOKS": hook},
    )  # fmt: skip
    assert again.code == 0 and again.report["chunks_resent"] >= 1


def test_a_gateway_drops_the_hooks_its_configuration_carries(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from gateway_vm.daemon import inert_hooks

    cfg = GatewayConfig(
        job_id="j-h",
        gateway_id="gw-h",
        role=GatewayRole.SOURCE,
        region="local",
        ca_cert_pem="CA",
        cert_pem="CERT",
        key_pem="KEY",
        control_token="t",
        test_hooks={"drop_chunk": "3", "sleep_per_chunk": "60"},
    )
    assert inert_hooks(cfg).test_hooks == cfg.test_hooks  # started by the suite
    monkeypatch.delenv("SKYHOP_TEST_SUITE")
    assert inert_hooks(cfg).test_hooks == {}
