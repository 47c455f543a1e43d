"""cdk-nag's AwsSolutions checks on the stack, and every finding it keeps, with its reason.

:func:`add_checks` registers the AwsSolutions rule pack as a CDK validation
plugin, so ``cdk synth`` and ``cdk deploy`` fail on any unacknowledged finding
(the report lands in ``cdk.out/validation-report.json``). :func:`acknowledge`
records the findings the stack keeps on purpose:

* ``AwsSolutions-IAM5`` (a wildcard in a resource): one acknowledgement per
  wildcard resource of each role, with the reason of every statement that grants
  it (:data:`infra_cdk.permissions.WILDCARD_REASONS`, by the statement's Sid). A
  wildcard statement without a reason is an error at synthesis, so a new one
  cannot slip in unexplained.
* the findings in :data:`KEPT`, each with its reason.

cdk-nag v3 acknowledges findings through CDK's own ``Validations`` API; each
finding id is acknowledged exactly (``AwsSolutions-IAM5[Resource::...]``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aws_cdk import Acknowledgment, App, Stack, Validations
from aws_cdk import aws_iam as iam
from constructs import IConstruct

from infra_cdk.permissions import CDK_WILDCARD_REASONS, WILDCARD_REASONS

PACK = "AwsSolutions"
# between the reasons of the statements that grant the same wildcard resource
REASON_SEPARATOR = " | "

# The stack's own functions run python3.12: the runtime, the wheels of the
# dependencies layer (pip --python-version) and the Powertools layer's public
# parameter move together (functions.PYTHON, packaging.PYTHON_VERSION,
# functions.powertools_parameter), and skyhop is tested here on 3.11-3.12; the
# python3.14 runtime cdk-nag asks for has no interpreter on the test machines.
FUNCTIONS_KEPT = {
    "AwsSolutions-L1": (
        "python3.12 is the runtime the dependencies layer is built for and skyhop is "
        "tested on; moving to a newer runtime is one change of functions.PYTHON and "
        "packaging.PYTHON_VERSION once it is tested"
    ),
}

# Findings kept on CDK's own BucketNotificationsHandler: rule id -> reason.
KEPT = {
    # CDK's own singleton that writes the S3 -> EventBridge/SQS notification settings
    # of the rules' buckets (Custom::S3BucketNotifications); its role is CDK's.
    "AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/"
    "AWSLambdaBasicExecutionRole]": (
        "CDK's BucketNotificationsHandler (it sets the rules' bucket notifications at "
        "deployment) comes with this managed policy for its logs; skyhop's own roles "
        "use no managed policy"
    ),
}


class NagError(Exception):
    """A wildcard resource with no reason (a programming error in ``permissions``)."""


def add_checks(app: App) -> None:
    """Run cdk-nag's AwsSolutions pack on every stack of ``app`` at synthesis."""
    from cdk_nag import AwsSolutionsChecks

    Validations.of(app).add_plugins(AwsSolutionsChecks(app))


def acknowledge(stack: Stack) -> None:
    """Acknowledge every finding the stack keeps on purpose, each with its reason."""
    for role in _roles(stack):
        _acknowledge_wildcards(stack, role)
    functions = stack.node.try_find_child("Functions")
    if functions is not None:
        for rule, reason in FUNCTIONS_KEPT.items():
            _ack(functions, rule, reason)
    handler = _bucket_notifications_handler(stack)
    if handler is not None:
        for rule, reason in KEPT.items():
            _ack(handler, rule, reason)


def nag_text(value: Any) -> str:
    """A resolved CloudFormation value as cdk-nag prints it in a finding id
    (``{"Ref": "AWS::Partition"}`` -> ``<AWS::Partition>``,
    ``{"Fn::GetAtt": ["X", "Arn"]}`` -> ``<X.Arn>``, joins concatenated)."""
    if isinstance(value, str):
        return value
    if isinstance(value, Mapping):
        if "Ref" in value:
            return f"<{value['Ref']}>"
        if "Fn::GetAtt" in value:
            return "<" + ".".join(value["Fn::GetAtt"]) + ">"
        if "Fn::Join" in value:
            sep, parts = value["Fn::Join"]
            return str(sep).join(nag_text(p) for p in parts)
        if "Fn::Sub" in value:  # an asset bucket's name: the template text itself
            sub = value["Fn::Sub"]
            return str(sub if isinstance(sub, str) else sub[0])
    raise NagError(f"cannot render {value!r} as cdk-nag does")


def _ack(scope: IConstruct, rule: str, reason: str) -> None:
    Validations.of(scope).acknowledge(Acknowledgment(id=f"{PACK}::{rule}", reason=reason))


def _roles(stack: Stack) -> list[iam.Role]:
    return [c for c in stack.node.find_all() if isinstance(c, iam.Role)]


def _bucket_notifications_handler(stack: Stack) -> IConstruct | None:
    for child in stack.node.children:
        if child.node.id.startswith("BucketNotificationsHandler"):
            return child
    return None


def _acknowledge_wildcards(stack: Stack, role: iam.Role) -> None:
    policy = role.node.try_find_child("DefaultPolicy")
    if not isinstance(policy, iam.Policy):
        return
    document = stack.resolve(policy.document)
    reasons: dict[str, list[str]] = {}
    for statement in document.get("Statement", []):
        resources = statement.get("Resource", [])
        for resource in resources if isinstance(resources, list) else [resources]:
            text = nag_text(resource)
            if "*" not in text:
                continue
            reason = _reason(statement)
            if reason is None:
                raise NagError(
                    f"{role.node.path}: statement {statement.get('Sid') or statement['Action']} "
                    f"grants {text} with no reason in permissions.WILDCARD_REASONS"
                )
            found = reasons.setdefault(text, [])
            if reason not in found:
                found.append(reason)
    for text, why in sorted(reasons.items()):
        _ack(role, f"AwsSolutions-IAM5[Resource::{text}]", REASON_SEPARATOR.join(why))


def _reason(statement: Mapping[str, Any]) -> str | None:
    sid = statement.get("Sid")
    if sid:
        return WILDCARD_REASONS.get(sid)
    actions = statement.get("Action", [])
    actions = actions if isinstance(actions, list) else [actions]
    # statements CDK adds itself (no Sid): X-Ray tracing of the functions
    known = {CDK_WILDCARD_REASONS.get(a) for a in actions}
    return known.pop() if len(known) == 1 and None not in known else None


__all__ = [
    "FUNCTIONS_KEPT",
    "KEPT",
    "REASON_SEPARATOR",
    "NagError",
    "acknowledge",
    "add_checks",
    "nag_text",
]
