"""The checkov checks the stack does not meet on purpose, each with its reason.

checkov reads a resource's ``Metadata.checkov.skip`` list (``id`` and
``comment``). :func:`apply` writes it on the synthesised resources by type, so
``checkov -f cdk.out/<stack>.template.json`` reports no failed check and every
skip carries its reason.
"""

from __future__ import annotations

from aws_cdk import CfnResource, Stack

_DEPLOY_HANDLER = (
    "CDK's own deployment-time handler of Custom::S3BucketNotifications, invoked only "
    "by CloudFormation"
)

# resource type -> [(check id, reason)]
SKIPS: dict[str, list[tuple[str, str]]] = {
    "AWS::SQS::Queue": [
        (
            "CKV_AWS_27",
            "encrypted with SQS-managed keys (SqsManagedSseEnabled), which the check does not "
            "know; a KMS key would need a key policy for EventBridge and S3 to send",
        ),
    ],
    "AWS::SNS::Topic": [
        (
            "CKV_AWS_26",
            "dead-letter alarms only (alarm name and state); CloudWatch cannot publish to a "
            "topic under the AWS managed key, and a key of our own is billed monthly for that",
        ),
    ],
    "AWS::Logs::LogGroup": [
        (
            "CKV_AWS_158",
            "CloudWatch Logs encrypts log data at rest with its own keys; the functions log "
            "no key material, and a key of our own is billed monthly for that",
        ),
    ],
    "AWS::Lambda::Function": [
        (
            "CKV_AWS_116",
            "the queue consumers' failed messages go to their queue's dead-letter queue "
            "(redrive after 5 receives); a function DLQ applies to asynchronous calls only, "
            "the reaper's, whose failed run the next scheduled run redoes",
        ),
        (
            "CKV_AWS_117",
            "the functions call AWS APIs only; a VPC would need a NAT gateway billed hourly "
            "while idle and protects nothing here",
        ),
        (
            "CKV_AWS_173",
            "the environment holds resource names, queue URLs and rules, no secret; Lambda "
            "encrypts it at rest with its service key",
        ),
    ],
}
# CDK's own functions: also no reserved concurrency (CKV_AWS_115).
CDK_FUNCTION_SKIPS = [
    ("CKV_AWS_115", _DEPLOY_HANDLER),
    ("CKV_AWS_116", _DEPLOY_HANDLER),
    ("CKV_AWS_117", _DEPLOY_HANDLER),
    ("CKV_AWS_173", _DEPLOY_HANDLER),
]


def apply(stack: Stack) -> None:
    """Write each resource's checkov skips (with their reasons) into its metadata."""
    for construct in stack.node.find_all():
        if not isinstance(construct, CfnResource):
            continue
        skips = SKIPS.get(construct.cfn_resource_type, [])
        if construct.cfn_resource_type == "AWS::Lambda::Function" and _is_cdk_handler(construct):
            skips = CDK_FUNCTION_SKIPS
        if skips:
            construct.add_metadata(
                "checkov", {"skip": [{"id": i, "comment": reason} for i, reason in skips]}
            )


def _is_cdk_handler(resource: CfnResource) -> bool:
    return any(p.node.id.startswith("BucketNotificationsHandler") for p in resource.node.scopes)
