"""Entry point of the skyhop CDK app: ``cdk deploy`` (run from ``infra_cdk/``) calls ``python3 app.py``.

Context values (``cdk.json`` or ``-c key=value``) are listed in
:class:`infra_cdk.settings.AppSettings` and ``infra_cdk/README.md``. A bad
context value or rules file stops synthesis with one line naming it.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make `infra_cdk` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import aws_cdk as cdk

from infra_cdk.nag import add_checks
from infra_cdk.rules import load_rules
from infra_cdk.settings import settings_from_context
from infra_cdk.stack import ControlPlaneStack
from skyhop.errors import SkyhopError

#: set to 1 (``skyhop deploy aws --dry-run`` does) to synthesise without building
#: assets (the dependencies layer's pip install): the template is the same
NO_BUNDLING_ENV = "SKYHOP_CDK_NO_BUNDLING"


def build_app(
    context: Mapping[str, Any] | None = None, *, outdir: str | None = None
) -> tuple[cdk.App, ControlPlaneStack]:
    """Create the app and its one stack; raise :class:`SkyhopError` for bad settings or rules.

    cdk-nag's AwsSolutions checks run at synthesis: an unacknowledged finding fails it
    (see :mod:`infra_cdk.nag`)."""
    post = {"aws:cdk:bundling-stacks": []} if os.environ.get(NO_BUNDLING_ENV) == "1" else None
    app = cdk.App(context=dict(context or {}), outdir=outdir, post_cli_context=post)
    add_checks(app)
    settings = settings_from_context(app.node.get_all_context())
    rules = load_rules(settings.rules_file) if settings.rules_file else None
    env = cdk.Environment(
        account=os.environ.get("CDK_DEFAULT_ACCOUNT"), region=os.environ.get("CDK_DEFAULT_REGION")
    )
    stack = ControlPlaneStack(
        app,
        settings.stack_name,
        settings=settings,
        rules=rules,
        env=env,
        description="skyhop control plane: queues, manifest, functions, gateway template, replication",
    )
    return app, stack


def main() -> int:
    """Synthesise; print a one-line error and return 2 when the input is bad."""
    try:
        app, _ = build_app()
        app.synth()
    except SkyhopError as exc:
        print(f"skyhop: {exc}", file=sys.stderr)
        return exc.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
