"""The gateway VM boot script: the runner it installs powers the VM off after a
clean gateway exit (no VM idles after its job) and lets systemd restart a crash.

The runner really runs here, with a stand-in ``python`` that exits with a chosen
code and a stand-in ``systemctl`` on PATH that records how it was called."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from skyhop.compute import startup


def _stand_ins(tmp_path: Path, exit_code: int) -> tuple[Path, Path, dict[str, str]]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "systemctl.calls"
    python = bin_dir / "python"
    python.write_text(f'#!/bin/bash\necho "$@" > {tmp_path}/python.args\nexit {exit_code}\n')
    systemctl = bin_dir / "systemctl"
    systemctl.write_text(f'#!/bin/bash\necho "$@" >> {calls}\n')
    for exe in (python, systemctl):
        exe.chmod(0o755)
    runner = tmp_path / "run-gateway"
    runner.write_text(startup.runner_script(str(python), "/etc/skyhop/gateway.json"))
    runner.chmod(0o700)
    env = dict(os.environ, PATH=f"{bin_dir}:{os.environ['PATH']}")
    return runner, calls, env


def test_clean_gateway_exit_powers_the_vm_off(tmp_path: Path):
    runner, calls, env = _stand_ins(tmp_path, 0)
    proc = subprocess.run([str(runner)], env=env, capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "python.args").read_text().split() == [
        "-m",
        "gateway_vm",
        "--config",
        "/etc/skyhop/gateway.json",
    ]
    assert calls.read_text().split() == ["poweroff"]


@pytest.mark.parametrize("code", [1, 3, 143])
def test_crashed_gateway_keeps_the_vm_and_reports_its_code(tmp_path: Path, code: int):
    runner, calls, env = _stand_ins(tmp_path, code)
    proc = subprocess.run([str(runner)], env=env, capture_output=True, text=True, timeout=30)
    assert proc.returncode == code  # systemd's Restart=on-failure sees the failure
    assert not calls.exists()


def test_boot_script_installs_exactly_this_runner_under_systemd():
    script = startup.startup_script('echo "{}" > "$CONFIG"', "skyhop[aws]==0.1.0")
    body = script.split("<<'SKYHOP_RUNNER'\n", 1)[1].split("SKYHOP_RUNNER\n", 1)[0]
    assert body == startup.runner_script()
    assert (
        f"systemd-run --unit skyhop-gateway --property=Restart=on-failure {startup.RUNNER_PATH}"
        in script
    )
    assert f"chmod 700 {startup.RUNNER_PATH}" in script
