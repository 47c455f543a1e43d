"""Lambda packaging without Docker: the staged source asset and the pip-built dependencies layer.

The layer test runs the real local bundler (pip) offline: it installs a small
wheel built here into a wheelhouse (``--no-index --find-links``), the way an
offline deployment uses the ``wheelhouse`` context value.
"""

from __future__ import annotations

import base64
import hashlib
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

os.environ.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "20")

from infra_cdk import packaging


def test_stage_source_holds_the_handlers_and_the_skyhop_package(tmp_path: Path) -> None:
    staged = packaging.stage_source(tmp_path / "src")
    assert (staged / "functions" / "__init__.py").is_file()
    assert (staged / "functions" / "aws" / "__init__.py").is_file()
    for module in ("models.py", "uri.py", "errors.py", "state/base.py"):
        assert (staged / "skyhop" / module).is_file(), module
    repo_handlers = sorted(
        p.name for p in (packaging.FUNCTIONS_DIR / "aws").glob("*.py") if p.is_file()
    )
    assert sorted(p.name for p in (staged / "functions" / "aws").glob("*.py")) == repo_handlers
    assert not list(staged.rglob("__pycache__"))
    assert not list(staged.rglob("*.pyc"))


def test_staged_source_imports_its_own_skyhop(tmp_path: Path) -> None:
    staged = packaging.stage_source(tmp_path / "src")
    out = subprocess.run(
        [sys.executable, "-c", "import functions.aws, skyhop.models; print(skyhop.__file__)"],
        cwd=staged,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert Path(out).resolve().is_relative_to(staged.resolve())


def test_restaging_replaces_stale_files(tmp_path: Path) -> None:
    dest = tmp_path / "src"
    packaging.stage_source(dest)
    (dest / "skyhop" / "deleted_module.py").write_text("")
    packaging.stage_source(dest)
    assert not (dest / "skyhop" / "deleted_module.py").exists()


def test_runtime_requirements_leave_out_what_lambda_provides() -> None:
    reqs = packaging.runtime_requirements()
    names = {r.split(">")[0].split("=")[0].split("[")[0].strip().lower() for r in reqs}
    assert {"pydantic", "cryptography", "google-crc32c"} <= names
    assert not names & {"boto3", "botocore", "aws-lambda-powertools"}


def test_runtime_requirements_bad_pyproject(tmp_path: Path) -> None:
    bad = tmp_path / "pyproject.toml"
    bad.write_text("[tool]\n")
    with pytest.raises(packaging.PackagingError, match="cannot read dependencies"):
        packaging.runtime_requirements(bad)


@pytest.mark.parametrize(("arch", "machine"), [("arm64", "aarch64"), ("x86_64", "x86_64")])
def test_pip_command_targets_the_lambda_platform(arch: str, machine: str) -> None:
    cmd = packaging.pip_command(Path("r.txt"), Path("out"), architecture=arch)
    assert cmd[:4] == [sys.executable, "-m", "pip", "install"]
    platforms = [cmd[i + 1] for i, a in enumerate(cmd) if a == "--platform"]
    assert f"manylinux2014_{machine}" in platforms
    assert f"manylinux_2_34_{machine}" in platforms
    assert "--only-binary=:all:" in cmd
    assert cmd[cmd.index("--python-version") + 1] == "3.12"
    assert "--no-index" not in cmd


def _wheel(wheelhouse: Path, name: str, version: str) -> Path:
    """A minimal pure-Python wheel: ``name/__init__.py`` plus a ``tests`` package to prune."""
    files = {
        f"{name}/__init__.py": f"VERSION = {version!r}\n",
        f"{name}/tests/__init__.py": "",
        f"{name}/tests/test_it.py": "def test_it():\n    pass\n",
        f"{name}-{version}.dist-info/METADATA": (
            f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
        ),
        f"{name}-{version}.dist-info/WHEEL": (
            "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
        ),
    }
    record = []
    for path, text in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=")
        record.append(f"{path},sha256={digest.decode()},{len(text.encode())}")
    record.append(f"{name}-{version}.dist-info/RECORD,,")
    files[f"{name}-{version}.dist-info/RECORD"] = "\n".join(record) + "\n"
    wheelhouse.mkdir(parents=True, exist_ok=True)
    path = wheelhouse / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as zf:
        for member, text in files.items():
            zf.writestr(member, text)
    return path


def test_local_bundler_builds_the_layer_offline_from_a_wheelhouse(tmp_path: Path) -> None:
    import aws_cdk as cdk

    wheelhouse = tmp_path / "wheels"
    _wheel(wheelhouse, "skyhop_demo_dep", "1.2.3")
    source = packaging.stage_requirements(tmp_path / "deps", ["skyhop_demo_dep==1.2.3"])
    bundler = packaging.PipLayerBundler(
        source / "requirements.txt", architecture="arm64", wheelhouse=wheelhouse
    )
    out = tmp_path / "layer"
    out.mkdir()
    options = cdk.BundlingOptions(image=cdk.DockerImage.from_registry("unused"))
    assert bundler.try_bundle(str(out), options) is True
    init = out / "python" / "skyhop_demo_dep" / "__init__.py"
    assert init.read_text() == "VERSION = '1.2.3'\n"
    assert not (out / "python" / "skyhop_demo_dep" / "tests").exists(), "test suites are pruned"


def test_local_bundler_reports_pip_failure_in_one_line(tmp_path: Path) -> None:
    import aws_cdk as cdk

    wheelhouse = tmp_path / "empty-wheelhouse"
    wheelhouse.mkdir()
    source = packaging.stage_requirements(tmp_path / "deps", ["skyhop-no-such-package==9.9"])
    bundler = packaging.PipLayerBundler(
        source / "requirements.txt", architecture="x86_64", wheelhouse=wheelhouse
    )
    out = tmp_path / "layer"
    out.mkdir()
    options = cdk.BundlingOptions(image=cdk.DockerImage.from_registry("unused"))
    with pytest.raises(packaging.PackagingError) as info:
        bundler.try_bundle(str(out), options)
    message = str(info.value)
    assert message.startswith("pip could not build the dependencies layer: ERROR")
    assert "skyhop-no-such-package" in message
    assert "\n" not in message
