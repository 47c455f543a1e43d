"""How the Lambda code is packaged, without Docker.

Two assets, both built on the machine that runs ``cdk synth``:

* the **source asset**, shared by every function: ``functions/aws/`` and the
  ``skyhop`` package, copied (a few hundred kilobytes, no network, well under a
  second). Handlers are ``functions.aws.<name>.handler``.
* the **dependencies layer**: ``skyhop``'s third-party runtime requirements
  (read from ``pyproject.toml``; boto3 comes with the Lambda runtime, Powertools
  from its official layer), installed with ``pip install --target`` for the
  Lambda platform (manylinux wheels only, so no compiler and no Docker). This
  is CDK *local bundling* (:class:`PipLayerBundler` implements ``ILocalBundling``);
  it runs only for stacks being deployed or synthesised with bundling, and its
  asset hash depends only on the requirements, so pip runs again only when they
  change. Tests and offline checks skip it with the standard CDK context
  ``aws:cdk:bundling-stacks=[]``; offline deploys point ``wheelhouse`` at a
  directory of wheels; ``dependenciesLayerArn`` uses a layer published elsewhere.
"""

from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Sequence
from pathlib import Path

import aws_cdk as cdk
import jsii
from aws_cdk import aws_lambda

REPO_ROOT = Path(__file__).resolve().parents[1]
FUNCTIONS_DIR = REPO_ROOT / "functions"
PYTHON_VERSION = "3.12"

# Provided by the Lambda runtime (boto3) or by the Powertools layer.
_PROVIDED = {"boto3", "botocore", "s3transfer", "aws-lambda-powertools", "aws-xray-sdk"}
# Lambda allows 250 MB unzipped for code and layers together; keep room for the
# Powertools layer and the source asset.
LAYER_LIMIT = 220 * 2**20
_IGNORE = shutil.ignore_patterns("__pycache__", "*.pyc", "*.pyo", ".pytest_cache", "tests")


class PackagingError(RuntimeError):
    """The Lambda code or its dependencies could not be staged."""


def skyhop_package_dir() -> Path:
    """Where the importable ``skyhop`` package lives (the repo's ``shared/skyhop`` when editable)."""
    spec = importlib.util.find_spec("skyhop")
    if spec is None or not spec.submodule_search_locations:
        raise PackagingError("the skyhop package is not importable; run `pip install -e .`")
    return Path(next(iter(spec.submodule_search_locations)))


def stage_source(dest: Path) -> Path:
    """Write the function source asset to ``dest`` (replacing what was there) and return it.

    Layout: ``functions/__init__.py``, ``functions/aws/...`` and ``skyhop/...``.
    """
    if dest.exists():
        shutil.rmtree(dest)
    (dest / "functions").mkdir(parents=True)
    init = FUNCTIONS_DIR / "__init__.py"
    if init.exists():
        shutil.copy2(init, dest / "functions" / "__init__.py")
    else:
        (dest / "functions" / "__init__.py").write_text("")
    aws = FUNCTIONS_DIR / "aws"
    if not aws.is_dir():
        raise PackagingError(f"{aws} is missing: nothing to package")
    shutil.copytree(aws, dest / "functions" / "aws", ignore=_IGNORE)
    shutil.copytree(skyhop_package_dir(), dest / "skyhop", ignore=_IGNORE)
    return dest


def runtime_requirements(pyproject: Path = REPO_ROOT / "pyproject.toml") -> list[str]:
    """``skyhop``'s base dependencies minus what the runtime and the Powertools layer provide."""
    try:
        project = tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]
    except (OSError, KeyError, tomllib.TOMLDecodeError) as exc:
        raise PackagingError(f"cannot read dependencies from {pyproject}: {exc}") from None
    out = []
    for req in project.get("dependencies", []):
        name = re.split(r"[\s\[<>=!~;]", req, maxsplit=1)[0].lower().replace("_", "-")
        if name not in _PROVIDED:
            out.append(req)
    return out


def stage_requirements(dest: Path, requirements: Sequence[str]) -> Path:
    """Write ``requirements.txt`` into ``dest``: the source of the dependencies layer asset."""
    dest.mkdir(parents=True, exist_ok=True)
    (dest / "requirements.txt").write_text("\n".join(requirements) + "\n", encoding="utf-8")
    return dest


def pip_command(
    requirements: Path,
    target: Path,
    *,
    architecture: str,
    python_version: str = PYTHON_VERSION,
    wheelhouse: Path | None = None,
) -> list[str]:
    """The pip command that installs Lambda-compatible wheels (``x86_64`` or ``arm64``) into ``target``."""
    machine = {"x86_64": "x86_64", "arm64": "aarch64"}[architecture]
    cmd = [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    cmd += ["--target", str(target), "--requirement", str(requirements)]
    cmd += ["--implementation", "cp", "--python-version", python_version]
    cmd += ["--only-binary=:all:", "--upgrade", "--no-compile"]
    # The python3.12 runtime is Amazon Linux 2023 (glibc 2.34): every manylinux up to it fits.
    for tag in ("manylinux2014", "manylinux_2_28", "manylinux_2_34"):
        cmd += ["--platform", f"{tag}_{machine}"]
    if wheelhouse is not None:
        cmd += ["--no-index", "--find-links", str(wheelhouse)]
    return cmd


@jsii.implements(cdk.ILocalBundling)
class PipLayerBundler:
    """Local bundling for the dependencies layer: pip on this machine, no Docker.

    CDK calls :meth:`try_bundle` with the empty output directory; the packages
    go to ``python/`` inside it, where the Lambda runtime looks for a layer's
    modules. CDK does not tell a local bundler the asset's source directory, so
    the bundler is built with the path of its requirements file.
    """

    def __init__(
        self, requirements: Path, *, architecture: str, wheelhouse: Path | None = None
    ) -> None:
        self.requirements = requirements
        self.architecture = architecture
        self.wheelhouse = wheelhouse

    def try_bundle(self, output_dir: str, options: cdk.BundlingOptions) -> bool:
        """Install the requirements into ``output_dir/python``; raise with pip's message on failure."""
        cmd = pip_command(
            self.requirements,
            Path(output_dir) / "python",
            architecture=self.architecture,
            wheelhouse=self.wheelhouse,
        )
        # pip with arguments built here from the bundle's own paths, never from input
        result = subprocess.run(cmd, capture_output=True, text=True, check=False)  # noqa: S603 - arguments built here, no shell
        if result.returncode != 0:
            lines = (result.stderr or result.stdout).strip().splitlines()
            errors = [line for line in lines if line.startswith("ERROR")] or lines[-1:]
            raise PackagingError(
                "pip could not build the dependencies layer: "
                + (errors[0] if errors else f"exit status {result.returncode}")
            )
        size = prune(Path(output_dir) / "python")
        if size > LAYER_LIMIT:
            raise PackagingError(
                f"the dependencies layer is {size / 2**20:.0f} MiB unzipped, over the "
                f"{LAYER_LIMIT / 2**20:.0f} MiB Lambda leaves beside the code and Powertools"
            )
        return True


def prune(root: Path) -> int:
    """Drop what never runs in Lambda (packages' own test suites, bytecode caches); return
    the remaining size in bytes."""
    for pattern in ("*/tests", "*/*/tests", "*/*/*/tests", "**/__pycache__"):
        for path in sorted(root.glob(pattern), reverse=True):
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
    return sum(f.stat().st_size for f in root.rglob("*") if f.is_file() and not f.is_symlink())


def dependencies_code(
    source_dir: Path, *, architecture: str, wheelhouse: Path | None = None
) -> aws_lambda.Code:
    """The dependencies layer's code: ``source_dir/requirements.txt`` bundled by pip.

    The image and command are what CDK would run in Docker if local bundling
    declined; :class:`PipLayerBundler` never declines (it raises with pip's
    message instead), so Docker is never needed.
    """
    bundler = PipLayerBundler(
        source_dir / "requirements.txt", architecture=architecture, wheelhouse=wheelhouse
    )
    platform = {"x86_64": "linux/amd64", "arm64": "linux/arm64"}[architecture]
    return aws_lambda.Code.from_asset(
        str(source_dir),
        bundling=cdk.BundlingOptions(
            image=aws_lambda.Runtime.PYTHON_3_12.bundling_image,
            command=[
                "bash",
                "-c",
                "pip install --no-compile -r requirements.txt -t /asset-output/python",
            ],
            platform=platform,
            local=bundler,
        ),
    )
