"""Issue 19 item 12: gateway VMs install this control plane's own skyhop, checked.

A gateway used to ``pip install skyhop`` at boot, unpinned, from the public index
(where ``skyhop`` is not ours). Now the boot script installs the wheel the
control plane built of its own code, refused unless its SHA-256 is the one in
the user data (``pip --require-hashes``), or at the very least this exact
version; an unpinned requirement is refused. The install step really runs here:
bash, curl from a local HTTP server, sha256sum, and real pip for the wheel.
"""

from __future__ import annotations

import functools
import http.server
import subprocess
import sys
import threading
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

import skyhop
from skyhop.compute import startup
from skyhop.compute.package import (
    GatewayPackage,
    build_wheel,
    pinned_requirements,
    sha256_of,
    version,
)
from skyhop.errors import UsageError


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_wheel(tmp_path_factory.mktemp("wheel"))


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """A directory served over HTTP on 127.0.0.1, and its URL."""
    root = tmp_path / "www"
    root.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.RequestHandlerClass.log_message = lambda *a: None  # type: ignore[method-assign]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize("spec", ["skyhop", "skyhop[gcp]", "skyhop>=0.1", "evil==1.0", " "])
def test_an_unpinned_or_foreign_package_is_refused(spec: str) -> None:
    with pytest.raises(UsageError) as info:
        startup.startup_script("true", spec)
    assert "\n" not in str(info.value)


def test_providers_pin_their_own_version_by_default() -> None:
    from skyhop.compute.ec2 import EC2ComputeProvider

    assert EC2ComputeProvider().package == f"skyhop=={version()}"
    assert startup.default_spec("gcp") == f"skyhop[gcp]=={version()}"
    with pytest.raises(UsageError, match="not pinned"):
        EC2ComputeProvider(package="skyhop")


def test_the_wheel_is_this_control_planes_code_and_pip_installs_it_by_hash(
    wheel: Path, tmp_path: Path
) -> None:
    again = build_wheel(tmp_path / "again")
    assert sha256_of(again) == sha256_of(wheel)  # the same code, the same bytes
    assert wheel.name == f"skyhop-{version()}-py3-none-any.whl"
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        here = Path(skyhop.__file__).parent
        assert (
            archive.read("skyhop/compute/package.py") == (here / "compute/package.py").read_bytes()
        )
        assert "gateway_vm/daemon.py" in names and "gateway_vm/__main__.py" in names
        assert not any("__pycache__" in n for n in names)
    target = tmp_path / "site"
    requirements = tmp_path / "requirements.txt"
    requirements.write_text(f"skyhop @ file://{wheel} --hash=sha256:{sha256_of(wheel)}\n")
    done = subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps",
         "--require-hashes", "--target", str(target), "-r", str(requirements)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert (target / "gateway_vm" / "daemon.py").exists()
    assert (target / f"skyhop-{version()}.dist-info").is_dir()
    requirements.write_text(f"skyhop @ file://{wheel} --hash=sha256:{'0' * 64}\n")
    refused = subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps",
         "--require-hashes", "--target", str(tmp_path / "other"), "-r", str(requirements)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert refused.returncode != 0 and "hash" in refused.stderr.lower()


def test_dependencies_are_pinned_to_the_control_planes_versions() -> None:
    pins = pinned_requirements("gcp")
    assert all("==" in p for p in pins)
    assert any(p.startswith("pydantic==") for p in pins)
    assert any(p.startswith("google-cloud-compute==") for p in pins)
    assert not any(p.startswith("azure-") for p in pins)


def _boot_install(tmp_path: Path, package: GatewayPackage) -> subprocess.CompletedProcess[str]:
    """The boot script's install step, run by bash with /opt/skyhop relocated and a
    pip stand-in that records how it was called."""
    opt = tmp_path / "opt"
    (opt / "bin").mkdir(parents=True)
    pip = opt / "bin" / "pip"
    pip.write_text(f'#!/bin/bash\necho "pip $*" >> {tmp_path}/pip.log\n')
    pip.chmod(0o755)
    script = "set -euo pipefail\n" + startup.install_commands(package)
    script = script.replace("/opt/skyhop", str(opt))
    return subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=120)


def test_the_boot_script_installs_the_wheel_only_if_its_hash_matches(
    wheel: Path, served: tuple[Path, str], tmp_path: Path
) -> None:
    root, url = served
    (root / wheel.name).write_bytes(wheel.read_bytes())
    package = GatewayPackage(
        url=f"{url}/{wheel.name}",
        sha256=sha256_of(wheel),
        filename=wheel.name,
        requirements=["pydantic==2.9.2"],
    )
    done = _boot_install(tmp_path, package)
    assert done.returncode == 0, done.stderr
    log = (tmp_path / "pip.log").read_text().splitlines()
    assert log[0].startswith("pip install -q --no-deps --require-hashes -r ")
    assert log[1] == "pip install -q pydantic==2.9.2"
    requirement = (tmp_path / "opt" / "dist" / "requirements.txt").read_text()
    assert f"--hash=sha256:{sha256_of(wheel)}" in requirement
    assert (tmp_path / "opt" / "dist" / wheel.name).read_bytes() == wheel.read_bytes()

    # someone swapped the wheel where the VMs fetch it: nothing is installed
    tampered = bytearray(wheel.read_bytes())
    tampered[100] ^= 1
    (root / wheel.name).write_bytes(bytes(tampered))
    other = tmp_path / "second"
    other.mkdir()
    refused = _boot_install(other, package)
    assert refused.returncode != 0
    assert "does not match its SHA-256" in refused.stderr
    assert not (other / "pip.log").exists()


def test_a_package_from_options_is_checked_before_anything_launches() -> None:
    from skyhop.compute.ec2 import EC2ComputeProvider

    with pytest.raises(UsageError, match="gateway package"):
        EC2ComputeProvider(package={"url": "ftp://x", "sha256": "0" * 64, "filename": "x.whl"})
    good = {
        "url": "https://example.test/skyhop-0.1.0-py3-none-any.whl",
        "sha256": "a" * 64,
        "filename": "skyhop-0.1.0-py3-none-any.whl",
    }
    assert isinstance(EC2ComputeProvider(package=good).package, GatewayPackage)
