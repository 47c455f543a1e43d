"""``skyhop deploy aws``: the CDK app (``infra_cdk/``) deployed with the CDK CLI,
then a control-plane profile written for ``skyhop cp --on``.

    skyhop deploy aws [--region R] [--stack NAME] [--rules FILE] [-c KEY=VALUE ...]
        [--name PROFILE] [--dry-run] [--delete]

The CDK CLI is the one ``package.json`` lists (``node_modules/.bin/cdk`` of the
checkout, installed by ``npm install``/``make setup``); it runs the app with
this Python (``--app "PYTHON app.py"``), so the app imports this skyhop.

* deploy: ``cdk deploy STACK --require-approval never --outputs-file FILE``;
  the stack's outputs (queue URLs, manifest table) become the profile
  (``$SKYHOP_HOME/remotes.toml``, named ``aws`` unless ``--name``);
* ``--dry-run``: ``cdk synth STACK`` without building assets (no pip, no AWS
  call), then the resources that would be created, by type, and the profile
  that would be written; nothing is deployed or written;
* ``--delete``: ``cdk destroy STACK --force`` and the profile is removed
  (``retainData`` keeps the manifest table and key, as ``infra_cdk`` says).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from skyhop.errors import SkyhopError, UsageError, first_line
from skyhop.remotes import ControlPlaneProfile

DEFAULT_STACK = "Skyhop"
NO_BUNDLING_ENV = "SKYHOP_CDK_NO_BUNDLING"  # infra_cdk/app.py reads it
#: the stack outputs a profile is made of (infra_cdk/stack.py ``_outputs``)
OUTPUTS = {
    "requests_queue": "RequestsQueueUrl",
    "events_queue": "GatewayEventsQueueUrl",
    "results_queue": "ResultsQueueUrl",
    "manifest_table": "ManifestTableName",
}

#: runs one CDK CLI command: (argv, cwd, env) -> exit status (tests replace it)
Runner = Callable[[Sequence[str], Path, Mapping[str, str]], int]


def _stderr() -> int | None:
    """This process's stderr descriptor (None when it has none, as under some test runners)."""
    try:
        return sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):
        return None


def run_cdk(argv: Sequence[str], cwd: Path, env: Mapping[str, str]) -> int:
    """The CDK CLI, its output passed through to this terminal's stderr.

    Its stdout goes to stderr too: skyhop's own stdout carries only what skyhop
    prints (``--json`` must parse), and the CDK CLI prints notices there that
    ``--no-notices`` does not silence (for example "N feature flags are not
    configured", which CI's fresh checkout got and this machine did not).
    """
    try:
        # the CDK CLI of this checkout, with arguments this module built
        done = subprocess.run(list(argv), cwd=cwd, env=dict(env), stdout=_stderr(), check=False)  # noqa: S603 - arguments built here, no shell
        return done.returncode
    except OSError as exc:
        raise UsageError(f"cannot run the CDK CLI {argv[0]}: {exc.strerror or exc}") from None


@dataclass
class AwsDeploy:
    """One ``skyhop deploy aws`` invocation."""

    region: str
    stack: str = DEFAULT_STACK
    rules: Path | None = None
    context: dict[str, str] = field(default_factory=dict)
    app_dir: Path | None = None
    runner: Runner = run_cdk

    # ------------------------------------------------------------ where things are

    @property
    def checkout(self) -> Path:
        return self.app().parent

    def app(self) -> Path:
        """``infra_cdk/`` of the skyhop checkout (``--app-dir`` elsewhere)."""
        found = self.app_dir or Path(__file__).resolve().parents[3] / "infra_cdk"
        if not (found / "app.py").is_file() or not (found / "cdk.json").is_file():
            raise UsageError(
                f"no CDK app at {found}: skyhop deploy aws runs infra_cdk/ of a skyhop "
                "checkout (give it with --app-dir)"
            )
        return found

    def cdk(self) -> Path:
        """The CDK CLI ``package.json`` installs."""
        found = self.checkout / "node_modules" / ".bin" / "cdk"
        if not found.exists():
            raise UsageError(
                f"the CDK CLI is not installed: run `npm install` in {self.checkout} "
                "(package.json lists aws-cdk), or `make setup`"
            )
        return found

    # ------------------------------------------------------------ commands

    def _common(self) -> list[str]:
        argv = ["--app", f"{sys.executable} app.py", "-c", f"stackName={self.stack}"]
        if self.rules is not None:
            rules = self.rules.resolve()
            if not rules.is_file():
                raise UsageError(f"--rules {self.rules}: no such file")
            argv += ["-c", f"rulesFile={rules}"]
        for key, value in sorted(self.context.items()):
            if key.startswith("aws:"):
                raise UsageError(f"-c {key}: the CDK reserves 'aws:' context keys")
            argv += ["-c", f"{key}={value}"]
        return argv + ["--no-notices", "--no-version-reporting"]

    def deploy_argv(self, outputs: Path) -> list[str]:
        return [
            str(self.cdk()),
            "deploy",
            self.stack,
            "--require-approval",
            "never",
            "--outputs-file",
            str(outputs),
            *self._common(),
        ]

    def synth_argv(self, outdir: Path) -> list[str]:
        return [str(self.cdk()), "synth", self.stack, "--quiet", "-o", str(outdir), *self._common()]

    def destroy_argv(self) -> list[str]:
        return [str(self.cdk()), "destroy", self.stack, "--force", *self._common()]

    def env(self, *, synth_only: bool = False) -> dict[str, str]:
        """The CLI's environment: the region, this skyhop importable by the app."""
        env = dict(os.environ)
        env.update(
            CDK_DEFAULT_REGION=self.region,
            AWS_REGION=self.region,
            AWS_DEFAULT_REGION=self.region,
            JSII_SILENCE_WARNING_UNTESTED_NODE_VERSION="1",
            JSII_SILENCE_WARNING_DEPRECATED_NODE_VERSION="1",
        )
        paths = [str(self.checkout / "shared"), str(self.checkout)]
        if env.get("PYTHONPATH"):
            paths.append(env["PYTHONPATH"])
        env["PYTHONPATH"] = os.pathsep.join(paths)
        if synth_only:
            env[NO_BUNDLING_ENV] = "1"
        return env

    def _run(self, argv: list[str], what: str, *, synth_only: bool = False) -> None:
        code = self.runner(argv, self.app(), self.env(synth_only=synth_only))
        if code != 0:
            raise SkyhopError(f"cdk {what} of stack {self.stack} failed (exit {code}); see above")

    # ------------------------------------------------------------ what a run does

    def deploy(self) -> ControlPlaneProfile:
        with tempfile.TemporaryDirectory(prefix="skyhop-cdk-") as tmp:
            outputs = Path(tmp) / "outputs.json"
            self._run(self.deploy_argv(outputs), "deploy")
            return self.profile_from_outputs(outputs)

    def dry_run(self) -> tuple[dict[str, int], list[str], ControlPlaneProfile]:
        """Synthesise: (resources by type, output names, the profile it would write)."""
        with tempfile.TemporaryDirectory(prefix="skyhop-cdk-") as tmp:
            self._run(self.synth_argv(Path(tmp)), "synth", synth_only=True)
            path = Path(tmp) / f"{self.stack}.template.json"
            try:
                template = json.loads(path.read_text())
            except (OSError, ValueError) as exc:
                raise SkyhopError(f"cdk synth wrote no template {path.name}: {exc}") from None
        resources = Counter(r.get("Type", "?") for r in template.get("Resources", {}).values())
        outputs = sorted(template.get("Outputs", {}))
        placeholder = {
            key: f"https://sqs.{self.region}.amazonaws.com/<account>/<{name}>"
            if key.endswith("queue")
            else f"<{name}>"
            for key, name in OUTPUTS.items()
            if name in outputs
        }
        profile = self.profile({self.stack: {OUTPUTS[k]: v for k, v in placeholder.items()}})
        return dict(sorted(resources.items())), outputs, profile

    def destroy(self) -> None:
        self._run(self.destroy_argv(), "destroy")

    def profile_from_outputs(self, path: Path) -> ControlPlaneProfile:
        try:
            raw = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise SkyhopError(
                f"cdk deploy wrote no outputs file ({first_line(exc)}): the profile was not "
                "written; `skyhop remote add` can add it from the stack's outputs"
            ) from None
        return self.profile(raw)

    def profile(self, outputs: Mapping[str, Mapping[str, str]]) -> ControlPlaneProfile:
        """The control-plane profile of the stack's outputs."""
        values = outputs.get(self.stack)
        if not isinstance(values, Mapping):
            raise SkyhopError(f"the CDK outputs name no stack {self.stack!r}")
        missing = [name for name in OUTPUTS.values() if not values.get(name)]
        if missing:
            raise SkyhopError(f"stack {self.stack} has no output {missing[0]}: is it skyhop's?")
        table = values[OUTPUTS["manifest_table"]]
        return ControlPlaneProfile(
            cloud="aws",
            region=self.region,
            stack=self.stack,
            requests_queue=_queue_uri(values[OUTPUTS["requests_queue"]]),
            events_queue=_queue_uri(values[OUTPUTS["events_queue"]]),
            results_queue=_queue_uri(values[OUTPUTS["results_queue"]]),
            manifest=f"dynamodb://{table}?region={self.region}",
        )


def _queue_uri(url: str) -> str:
    """A queue output as a queue URI (an SQS URL is one; a placeholder is shown as is)."""
    return url if "://" in url else f"sqs://{url}"
