"""IAM statements, one builder per capability, each naming its actions one by one.

No statement here grants a wildcard action. EC2 mutations carry the ``skyhop``
tag condition wherever EC2 supports it: resources a call creates must be tagged
in the request (``aws:RequestTag/skyhop``), resources it changes must already
carry the tag (``aws:ResourceTag/skyhop``). Only the resources EC2 cannot tag
in that call (AMIs, subnets, network interfaces, the VPC of a new security
group) are named without it. ``Describe*`` calls support no resource-level
permissions and are granted on ``*`` with their actions listed.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from aws_cdk import Aws
from aws_cdk import aws_iam as iam

from infra_cdk.rules import DataAccess

TAG_KEY = "skyhop"

_HAS_REQUEST_TAG = {"StringLike": {f"aws:RequestTag/{TAG_KEY}": "?*"}}
_HAS_RESOURCE_TAG = {"StringLike": {f"aws:ResourceTag/{TAG_KEY}": "?*"}}


def _ec2(resource: str, *, region: str = "*", account: str | None = Aws.ACCOUNT_ID) -> str:
    """An EC2 ARN in any region (gateways run wherever the plan puts them)."""
    return f"arn:{Aws.PARTITION}:ec2:{region}:{account or ''}:{resource}"


def _s3(path: str) -> str:
    return f"arn:{Aws.PARTITION}:s3:::{path}"


# ---------------------------------------------------------------- EC2
#
# What skyhop.compute.ec2.EC2ComputeProvider calls. Its network (VPC, subnet,
# internet gateway, the security group ``skyhop-gateways``) is tagged
# ``skyhop=network``, its gateways (instances and volumes) ``skyhop=gateway``,
# and each job's firewall rules ``skyhop:job=JOB``.


JOB_TAG_KEY = "skyhop:job"

EC2_DESCRIBE_ACTIONS = [
    "ec2:DescribeInstances",
    "ec2:DescribeImages",
    "ec2:DescribeVpcs",
    "ec2:DescribeSubnets",
    "ec2:DescribeInternetGateways",
    "ec2:DescribeRouteTables",
    "ec2:DescribeSecurityGroups",
    "ec2:DescribeSecurityGroupRules",
    "ec2:DescribeAvailabilityZones",
    "ec2:DescribeLaunchTemplates",
    "ec2:DescribeLaunchTemplateVersions",
]

# Every EC2 action that changes something; the tests check each is tag-conditioned.
EC2_MUTATIONS = {
    "ec2:RunInstances",
    "ec2:TerminateInstances",
    "ec2:CreateTags",
    "ec2:CreateVpc",
    "ec2:CreateSubnet",
    "ec2:ModifySubnetAttribute",
    "ec2:CreateInternetGateway",
    "ec2:AttachInternetGateway",
    "ec2:CreateRoute",
    "ec2:CreateSecurityGroup",
    "ec2:AuthorizeSecurityGroupIngress",
    "ec2:RevokeSecurityGroupIngress",
}

# The only (action, resource type) pairs granted without a skyhop tag condition,
# because no tag can be there when the call is made: public AMIs and the network
# interface RunInstances creates carry none; the VPC's main route table is made
# by CreateVpc, untagged, and gets its default route before the provider tags
# it; a firewall rule is found by its job tag *or* its description, so revoking
# must not depend on the tag. RunInstances and RevokeSecurityGroupIngress also
# name a resource that is tag-conditioned (the instance, the group), so neither
# works outside skyhop's resources; CreateRoute can only add routes.
UNCONDITIONED_EC2 = {
    "ec2:RunInstances": ("image/", "network-interface/"),
    "ec2:CreateRoute": ("route-table/",),
    "ec2:RevokeSecurityGroupIngress": ("security-group-rule/",),
}

_TAGGED_CREATE_ACTIONS = [
    "CreateVpc",
    "CreateSubnet",
    "CreateInternetGateway",
    "CreateSecurityGroup",
    "RunInstances",
]


def ec2_describe() -> iam.PolicyStatement:
    """Read-only EC2 calls (no resource-level permissions exist for them)."""
    return iam.PolicyStatement(sid="Ec2Describe", actions=EC2_DESCRIBE_ACTIONS, resources=["*"])


def ec2_network_setup() -> list[iam.PolicyStatement]:
    """Create the per-region skyhop network once: every new resource tagged ``skyhop``."""
    return [
        iam.PolicyStatement(
            sid="Ec2CreateTaggedNetwork",
            actions=[
                "ec2:CreateVpc",
                "ec2:CreateSubnet",
                "ec2:CreateInternetGateway",
                "ec2:CreateSecurityGroup",
            ],
            resources=[
                _ec2("vpc/*"),
                _ec2("subnet/*"),
                _ec2("internet-gateway/*"),
                _ec2("security-group/*"),
            ],
            conditions=_HAS_REQUEST_TAG,
        ),
        iam.PolicyStatement(
            sid="Ec2ChangeSkyhopNetwork",
            actions=[
                "ec2:CreateSubnet",
                "ec2:CreateSecurityGroup",
                "ec2:AttachInternetGateway",
                "ec2:ModifySubnetAttribute",
            ],
            resources=[_ec2("vpc/*"), _ec2("subnet/*"), _ec2("internet-gateway/*")],
            conditions=_HAS_RESOURCE_TAG,
        ),
        iam.PolicyStatement(
            sid="Ec2DefaultRoute",
            actions=["ec2:CreateRoute"],
            resources=[_ec2("route-table/*")],
        ),
        iam.PolicyStatement(
            sid="Ec2TagOnCreate",
            actions=["ec2:CreateTags"],
            resources=[
                _ec2("vpc/*"),
                _ec2("subnet/*"),
                _ec2("internet-gateway/*"),
                _ec2("security-group/*"),
                _ec2("instance/*"),
                _ec2("volume/*"),
            ],
            conditions={
                "StringEquals": {"ec2:CreateAction": _TAGGED_CREATE_ACTIONS},
                **_HAS_REQUEST_TAG,
            },
        ),
        iam.PolicyStatement(
            sid="Ec2TagMainRouteTable",
            actions=["ec2:CreateTags"],
            resources=[_ec2("route-table/*")],
            conditions={
                **_HAS_REQUEST_TAG,
                "ForAllValues:StringEquals": {"aws:TagKeys": [TAG_KEY, "Name"]},
            },
        ),
    ]


def ec2_launch(gateway_role_arn: str) -> list[iam.PolicyStatement]:
    """Launch gateways into the skyhop network; new instances and volumes must be tagged."""
    return [
        iam.PolicyStatement(
            sid="Ec2RunTaggedGateways",
            actions=["ec2:RunInstances"],
            resources=[_ec2("instance/*"), _ec2("volume/*")],
            conditions=_HAS_REQUEST_TAG,
        ),
        iam.PolicyStatement(
            sid="Ec2RunInSkyhopNetwork",
            actions=["ec2:RunInstances"],
            resources=[
                _ec2("subnet/*"),
                _ec2("security-group/*"),
                _ec2("launch-template/*"),
            ],
            conditions=_HAS_RESOURCE_TAG,
        ),
        iam.PolicyStatement(
            sid="Ec2RunUntaggableInputs",
            actions=["ec2:RunInstances"],
            resources=[_ec2("image/*", account=None), _ec2("network-interface/*")],
        ),
        iam.PolicyStatement(
            sid="PassGatewayRole",
            actions=["iam:PassRole"],
            resources=[gateway_role_arn],
            conditions={"StringEquals": {"iam:PassedToService": "ec2.amazonaws.com"}},
        ),
        iam.PolicyStatement(
            sid="ReadPublicAmiParameters",
            actions=["ssm:GetParameter"],
            resources=[
                f"arn:{Aws.PARTITION}:ssm:*::parameter/aws/service/ami-amazon-linux-latest/*"
            ],
        ),
    ]


def ec2_open_firewall() -> list[iam.PolicyStatement]:
    """Admit a job's gateways in the skyhop group, each rule tagged with the job."""
    return [
        iam.PolicyStatement(
            sid="Ec2OpenSkyhopGroup",
            actions=["ec2:AuthorizeSecurityGroupIngress"],
            resources=[_ec2("security-group/*")],
            conditions=_HAS_RESOURCE_TAG,
        ),
        iam.PolicyStatement(
            sid="Ec2JobRules",
            actions=["ec2:AuthorizeSecurityGroupIngress", "ec2:CreateTags"],
            resources=[_ec2("security-group-rule/*")],
            conditions={"StringLike": {f"aws:RequestTag/{JOB_TAG_KEY}": "?*"}},
        ),
    ]


def ec2_teardown() -> list[iam.PolicyStatement]:
    """Close a job's firewall rules and terminate its gateways: only skyhop-tagged ones."""
    return [
        iam.PolicyStatement(
            sid="Ec2TerminateSkyhopInstances",
            actions=["ec2:TerminateInstances"],
            resources=[_ec2("instance/*")],
            conditions=_HAS_RESOURCE_TAG,
        ),
        iam.PolicyStatement(
            sid="Ec2CloseSkyhopGroup",
            actions=["ec2:RevokeSecurityGroupIngress"],
            resources=[_ec2("security-group/*")],
            conditions=_HAS_RESOURCE_TAG,
        ),
        iam.PolicyStatement(
            sid="Ec2CloseJobRules",
            actions=["ec2:RevokeSecurityGroupIngress"],
            resources=[_ec2("security-group-rule/*")],
        ),
    ]


# ---------------------------------------------------------------- KMS


def kms_wrap(key_arn: str, gateway_role_arn: str) -> list[iam.PolicyStatement]:
    """Create and wrap a job's data key and grant the gateway role ``Decrypt`` for that job only."""
    return [
        iam.PolicyStatement(
            sid="WrapDataKeys",
            actions=["kms:GenerateDataKey", "kms:Encrypt"],
            resources=[key_arn],
            conditions={"Null": {f"kms:EncryptionContext:{JOB_TAG_KEY}": "false"}},
        ),
        iam.PolicyStatement(
            sid="GrantGatewaysOneJob",
            actions=["kms:CreateGrant"],
            resources=[key_arn],
            conditions={
                "StringEquals": {
                    "kms:GranteePrincipal": gateway_role_arn,
                    "kms:GrantConstraintType": "EncryptionContextEquals",
                },
                "ForAllValues:StringEquals": {"kms:GrantOperations": ["Decrypt"]},
            },
        ),
        kms_retire_grants(key_arn),
    ]


def kms_retire_grants(key_arn: str) -> iam.PolicyStatement:
    """List and revoke a job's grants when it ends (or when a crash left them behind)."""
    return iam.PolicyStatement(
        sid="RevokeJobGrants",
        actions=["kms:ListGrants", "kms:RevokeGrant"],
        resources=[key_arn],
    )


# ---------------------------------------------------------------- data stores


# What skyhop.state.dynamodb calls: queries (table and indexes), consistent
# reads, transactions (authorised as their Put/Update/Delete/ConditionCheck
# parts) and batch deletes. No Scan: every read is a query.
MANIFEST_ACTIONS = [
    "dynamodb:GetItem",
    "dynamodb:BatchGetItem",
    "dynamodb:Query",
    "dynamodb:PutItem",
    "dynamodb:UpdateItem",
    "dynamodb:DeleteItem",
    "dynamodb:ConditionCheckItem",
    "dynamodb:BatchWriteItem",
]


def manifest_access(table_arn: str) -> iam.PolicyStatement:
    """Read and conditionally write the manifest table and query its indexes."""
    return iam.PolicyStatement(
        sid="ManifestTable",
        actions=MANIFEST_ACTIONS,
        resources=[table_arn, f"{table_arn}/index/*"],
    )


def idempotency_access(table_arn: str) -> iam.PolicyStatement:
    """What Powertools' DynamoDB idempotency persistence layer calls."""
    return iam.PolicyStatement(
        sid="IdempotencyTable",
        actions=[
            "dynamodb:GetItem",
            "dynamodb:PutItem",
            "dynamodb:UpdateItem",
            "dynamodb:DeleteItem",
        ],
        resources=[table_arn],
    )


def send_to(sid: str, queue_arns: Sequence[str]) -> iam.PolicyStatement:
    """Post messages to the given queues."""
    return iam.PolicyStatement(
        sid=sid, actions=["sqs:SendMessage", "sqs:GetQueueUrl"], resources=list(queue_arns)
    )


# ---------------------------------------------------------------- control queues
#
# What skyhop.queues.sqs.SQSControlQueues calls: one queue per gateway, named
# ``PREFIX-JOB--GATEWAY`` and created (tagged, so TagQueue too) in the functions'
# region, where the gateways read it wherever they run. ListQueues supports no
# resource-level permissions (the Service Authorization Reference names no
# resource type for it), so it alone is granted on ``*``; it only lists names.

CONTROL_QUEUE_ACTIONS = [
    "sqs:CreateQueue",
    "sqs:TagQueue",
    "sqs:DeleteQueue",
    "sqs:SendMessage",
    "sqs:GetQueueUrl",
    "sqs:GetQueueAttributes",
]
CONTROL_QUEUE_GATEWAY_ACTIONS = [
    "sqs:ReceiveMessage",
    "sqs:DeleteMessage",
    "sqs:GetQueueUrl",
    "sqs:GetQueueAttributes",
]


def control_queue_arn(prefix: str) -> str:
    """Every control queue under ``prefix`` in the stack's region and account."""
    return f"arn:{Aws.PARTITION}:sqs:{Aws.REGION}:{Aws.ACCOUNT_ID}:{prefix}-*"


def control_queues_manage(prefix: str) -> list[iam.PolicyStatement]:
    """Create a job's control queues, send gateways their orders, find and delete them."""
    return [
        iam.PolicyStatement(
            sid="ManageControlQueues",
            actions=CONTROL_QUEUE_ACTIONS,
            resources=[control_queue_arn(prefix)],
        ),
        iam.PolicyStatement(sid="ListControlQueues", actions=["sqs:ListQueues"], resources=["*"]),
    ]


def control_queues_consume(prefix: str) -> iam.PolicyStatement:
    """A gateway takes (receives and deletes) the orders from its control queue."""
    return iam.PolicyStatement(
        sid="TakeControlMessages",
        actions=CONTROL_QUEUE_GATEWAY_ACTIONS,
        resources=[control_queue_arn(prefix)],
    )


def log_writes(log_group_arn: str) -> iam.PolicyStatement:
    """Write a function's own log group (created by the stack, so no CreateLogGroup)."""
    return iam.PolicyStatement(
        sid="WriteOwnLogs",
        actions=["logs:CreateLogStream", "logs:PutLogEvents"],
        resources=[log_group_arn, f"{log_group_arn}:log-stream:*"],
    )


# ---------------------------------------------------------------- S3


S3_BUCKET_READ = ["s3:ListBucket", "s3:GetBucketLocation"]
S3_OBJECT_READ = ["s3:GetObject", "s3:GetObjectVersion", "s3:GetObjectAttributes"]
S3_BUCKET_WRITE = ["s3:ListBucketMultipartUploads", "s3:GetBucketLocation", "s3:ListBucket"]
S3_OBJECT_WRITE = [
    "s3:PutObject",
    "s3:GetObject",
    "s3:GetObjectAttributes",
    "s3:AbortMultipartUpload",
    "s3:ListMultipartUploadParts",
]


def _own_account() -> dict[str, dict[str, str]]:
    return {"StringEquals": {"s3:ResourceAccount": Aws.ACCOUNT_ID}}


def s3_transfer_access(
    sid: str, buckets: Iterable[str], *, account_wide: bool = False
) -> list[iam.PolicyStatement]:
    """Read and write whole buckets (ad-hoc transfers, the submit path and the gateways).

    ``account_wide`` (some rule selects buckets by tag, so their names are not
    known before deployment) widens the resources to every bucket of this
    account, never another account's.
    """
    names = sorted(set(buckets))
    statements: list[iam.PolicyStatement] = []
    if names:
        statements.append(
            iam.PolicyStatement(
                sid=f"{sid}Buckets",
                actions=sorted(set(S3_BUCKET_READ + S3_BUCKET_WRITE)),
                resources=[_s3(b) for b in names],
            )
        )
        statements.append(
            iam.PolicyStatement(
                sid=f"{sid}Objects",
                actions=sorted(set(S3_OBJECT_READ + S3_OBJECT_WRITE)),
                resources=[_s3(f"{b}/*") for b in names],
            )
        )
    if account_wide:
        statements.append(
            iam.PolicyStatement(
                sid=f"{sid}AccountBuckets",
                actions=sorted(set(S3_BUCKET_READ + S3_BUCKET_WRITE)),
                resources=[_s3("*")],
                conditions=_own_account(),
            )
        )
        statements.append(
            iam.PolicyStatement(
                sid=f"{sid}AccountObjects",
                actions=sorted(set(S3_OBJECT_READ + S3_OBJECT_WRITE)),
                resources=[_s3("*/*")],
                conditions=_own_account(),
            )
        )
    return statements


def s3_replication_access(access: DataAccess) -> list[iam.PolicyStatement]:
    """What the bucket-events function needs for the rules: read each source prefix, write
    (and, for rules that propagate deletes, delete) under each destination prefix."""
    statements: list[iam.PolicyStatement] = []
    if access.sources:
        statements.append(
            iam.PolicyStatement(
                sid="ReplicationSourceBuckets",
                actions=S3_BUCKET_READ,
                resources=sorted({_s3(b) for b, _ in access.sources}),
            )
        )
        statements.append(
            iam.PolicyStatement(
                sid="ReplicationSourceObjects",
                actions=S3_OBJECT_READ,
                resources=sorted({_s3(f"{b}/{p}*") for b, p in access.sources}),
            )
        )
    if access.tagged_sources:
        statements.append(
            iam.PolicyStatement(
                sid="ReplicationTaggedSourceBuckets",
                actions=S3_BUCKET_READ + ["s3:GetBucketTagging"],
                resources=[_s3("*")],
                conditions=_own_account(),
            )
        )
        statements.append(
            iam.PolicyStatement(
                sid="ReplicationTaggedSourceObjects",
                actions=S3_OBJECT_READ,
                resources=[_s3("*/*")],
                conditions=_own_account(),
            )
        )
    if access.destinations:
        statements.append(
            iam.PolicyStatement(
                sid="ReplicationDestinationBuckets",
                actions=S3_BUCKET_WRITE,
                resources=sorted({_s3(b) for b, _, _ in access.destinations}),
            )
        )
        statements.append(
            iam.PolicyStatement(
                sid="ReplicationDestinationObjects",
                actions=S3_OBJECT_WRITE,
                resources=sorted({_s3(f"{b}/{p}*") for b, p, _ in access.destinations}),
            )
        )
        deletes = sorted({_s3(f"{b}/{p}*") for b, p, d in access.destinations if d})
        if deletes:
            statements.append(
                iam.PolicyStatement(
                    sid="ReplicationDestinationDeletes",
                    actions=["s3:DeleteObject"],
                    resources=deletes,
                )
            )
    return statements
