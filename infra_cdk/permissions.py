"""IAM statements, one builder per capability, each naming its actions one by one.

No statement here grants a wildcard action. Every resource wildcard has a reason
in :data:`WILDCARD_REASONS` (keyed by the statement's Sid), which
:mod:`infra_cdk.nag` turns into the cdk-nag acknowledgement of that finding;
a statement with a wildcard resource and no reason fails synthesis.

EC2 mutations are scoped to what :mod:`skyhop.compute.ec2` creates and uses
(see :class:`Ec2Scope`): the regions the stack may run gateways in, the
``skyhop=network`` / ``skyhop=gateway`` tags it puts on everything it creates,
the job tag on per-job security groups and their rules, and, for launches, the
stack's own launch template (IMDSv2, the gateway instance profile, the
template's AMI). ``Describe*`` calls support no resource-level permissions and
are granted on ``*`` with their actions listed.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from aws_cdk import Aws
from aws_cdk import aws_iam as iam

from infra_cdk.rules import DataAccess

TAG_KEY = "skyhop"

# ---------------------------------------------------------------- EC2
#
# What skyhop.compute.ec2.EC2ComputeProvider calls. Its network (VPC, subnet, the
# subnet's route table, internet gateway, the group ``skyhop-gateways`` that admits
# nothing, and one security group per job, ``skyhop-job-JOB``) is tagged ``skyhop=network`` (the
# job groups also ``skyhop:job=JOB``), its gateways (instances and volumes)
# ``skyhop=gateway`` and ``skyhop:job=JOB``, and each job's firewall rules
# ``skyhop:job=JOB``. A security group or subnet can only be made in a VPC
# tagged ``skyhop=network``, and such a VPC only by these statements, so the tag
# chain keeps every change inside skyhop's own network. So with routes: a route
# table is tagged ``skyhop=network`` only by the CreateRouteTable that makes it in
# such a VPC, and routes and subnet associations change only in a table so tagged.

JOB_TAG_KEY = "skyhop:job"
NETWORK_TAG_VALUE = "network"  # skyhop.compute.ec2.common.NETWORK_TAG
GATEWAY_TAG_VALUE = "gateway"  # skyhop.compute.ec2.common.GATEWAY_TAG

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

# Every EC2 action that changes something; the tests check each is scoped.
EC2_MUTATIONS = {
    "ec2:RunInstances",
    "ec2:TerminateInstances",
    "ec2:CreateTags",
    "ec2:CreateVpc",
    "ec2:CreateSubnet",
    "ec2:ModifySubnetAttribute",
    "ec2:CreateInternetGateway",
    "ec2:AttachInternetGateway",
    "ec2:CreateRouteTable",
    "ec2:CreateRoute",
    "ec2:AssociateRouteTable",
    "ec2:CreateSecurityGroup",
    "ec2:DeleteSecurityGroup",
    "ec2:AuthorizeSecurityGroupIngress",
    "ec2:RevokeSecurityGroupIngress",
}

# The (action, resource type) pairs granted without a skyhop *tag* condition,
# because no skyhop tag can be there when the call is made, and what scopes
# them instead (every EC2 mutation is also limited to the stack's regions):
# a launch's image and network interface must come with the stack's launch
# template (and the image from it) or, where the stack has no template, be an
# Amazon-owned image (see ec2_launch for why there is no template there).
UNCONDITIONED_EC2 = {
    "ec2:RunInstances": ("image/", "network-interface/", "launch-template/"),
}


@dataclass(frozen=True)
class Ec2Scope:
    """What the EC2 statements are scoped to.

    ``gateway_regions`` are the further regions gateways may run in (the stack's
    own region is always allowed); launches in the stack's region must use
    ``launch_template_arn``; elsewhere (no template there) the image must be
    Amazon's own. Every launch needs IMDSv2 and one of ``instance_profile_arns``
    (a gateway role's), and only instances with one of those profiles (this stack's
    gateways) can be terminated.
    """

    launch_template_arn: str
    #: the gateway roles' instance profiles (source, relay, destination): one of them
    instance_profile_arns: Sequence[str]
    #: the gateway roles' IAM roles, which launches may pass to EC2
    gateway_role_arns: Sequence[str]
    gateway_regions: Sequence[str] = field(default_factory=tuple)

    @property
    def other_regions(self) -> list[str]:
        """The gateway regions that are not (literally) the stack's own."""
        return sorted({r.removeprefix("aws:") for r in self.gateway_regions})

    @property
    def regions(self) -> list[str]:
        """Every region EC2 may be changed in: the stack's and the gateway regions."""
        return [Aws.REGION, *self.other_regions]


def _conditions(*parts: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """Merge condition blocks (operators may repeat; their keys may not)."""
    out: dict[str, dict[str, Any]] = {}
    for part in parts:
        for operator, keys in part.items():
            block = out.setdefault(operator, {})
            for key, value in keys.items():
                if key in block:
                    raise ValueError(f"condition {operator} {key} given twice")
                block[key] = value
    return out


def _tagged(kind: str, value: str) -> dict[str, dict[str, Any]]:
    """``aws:RequestTag/skyhop`` (kind ``Request``) or ``aws:ResourceTag/skyhop`` is ``value``."""
    return {"StringEquals": {f"aws:{kind}Tag/{TAG_KEY}": value}}


def _has_job_tag(kind: str) -> dict[str, dict[str, Any]]:
    return {"Null": {f"aws:{kind}Tag/{JOB_TAG_KEY}": "false"}}


def _in_regions(scope: Ec2Scope) -> dict[str, dict[str, Any]]:
    return {"StringEquals": {"aws:RequestedRegion": scope.regions}}


def _ec2(resource: str, *, region: str = "*", account: str | None = Aws.ACCOUNT_ID) -> str:
    """An EC2 ARN (in any region: the region is scoped by ``aws:RequestedRegion``)."""
    return f"arn:{Aws.PARTITION}:ec2:{region}:{account or ''}:{resource}"


def _s3(path: str) -> str:
    return f"arn:{Aws.PARTITION}:s3:::{path}"


# What the provider tags at creation, by the call that creates it.
_TAGGED_CREATE_ACTIONS = [
    "CreateVpc",
    "CreateSubnet",
    "CreateRouteTable",
    "CreateInternetGateway",
    "CreateSecurityGroup",
    "RunInstances",
]


def ec2_describe() -> iam.PolicyStatement:
    """Read-only EC2 calls (no resource-level permissions exist for them)."""
    return iam.PolicyStatement(sid="Ec2Describe", actions=EC2_DESCRIBE_ACTIONS, resources=["*"])


def ec2_network_setup(scope: Ec2Scope) -> list[iam.PolicyStatement]:
    """Create the per-region skyhop network once and the per-job security groups in it:
    every new resource tagged ``skyhop=network``, subnets, route tables and groups
    only in a VPC that carries that tag, attachments, routes and route-table
    associations only between such resources."""
    regions = _in_regions(scope)
    return [
        iam.PolicyStatement(
            sid="Ec2CreateSkyhopVpc",
            actions=["ec2:CreateVpc"],
            resources=[_ec2("vpc/*")],
            conditions=_conditions(regions, _tagged("Request", NETWORK_TAG_VALUE)),
        ),
        iam.PolicyStatement(
            sid="Ec2CreateTaggedNetwork",
            actions=[
                "ec2:CreateSubnet",
                "ec2:CreateRouteTable",
                "ec2:CreateInternetGateway",
                "ec2:CreateSecurityGroup",
            ],
            resources=[
                _ec2("subnet/*"),
                _ec2("route-table/*"),
                _ec2("internet-gateway/*"),
                _ec2("security-group/*"),
            ],
            conditions=_conditions(regions, _tagged("Request", NETWORK_TAG_VALUE)),
        ),
        iam.PolicyStatement(
            sid="Ec2ChangeSkyhopNetwork",
            actions=[
                "ec2:CreateSubnet",
                "ec2:CreateRouteTable",
                "ec2:CreateSecurityGroup",
                "ec2:AttachInternetGateway",
                "ec2:ModifySubnetAttribute",
            ],
            resources=[_ec2("vpc/*"), _ec2("subnet/*"), _ec2("internet-gateway/*")],
            conditions=_conditions(regions, _tagged("Resource", NETWORK_TAG_VALUE)),
        ),
        iam.PolicyStatement(
            # CreateRoute authorizes the route table alone (not the internet gateway it
            # names); AssociateRouteTable the table and the subnet
            sid="Ec2RouteSkyhopSubnet",
            actions=["ec2:CreateRoute", "ec2:AssociateRouteTable"],
            resources=[_ec2("route-table/*"), _ec2("subnet/*")],
            conditions=_conditions(regions, _tagged("Resource", NETWORK_TAG_VALUE)),
        ),
        iam.PolicyStatement(
            sid="Ec2TagOnCreate",
            actions=["ec2:CreateTags"],
            resources=[
                _ec2("vpc/*"),
                _ec2("subnet/*"),
                _ec2("route-table/*"),
                _ec2("internet-gateway/*"),
                _ec2("security-group/*"),
                _ec2("instance/*"),
                _ec2("volume/*"),
            ],
            conditions=_conditions(
                regions,
                {
                    "StringEquals": {
                        "ec2:CreateAction": _TAGGED_CREATE_ACTIONS,
                        f"aws:RequestTag/{TAG_KEY}": [NETWORK_TAG_VALUE, GATEWAY_TAG_VALUE],
                    }
                },
            ),
        ),
    ]


def ec2_launch(scope: Ec2Scope) -> list[iam.PolicyStatement]:
    """Launch gateways: in the stack's region only from the stack's launch template
    (with its AMI), elsewhere only Amazon's own images; always IMDSv2 and the gateway
    instance profile, tagged ``skyhop=gateway`` with the job, into a job's security
    group and a subnet of the skyhop network."""
    template = {"ArnEquals": {"ec2:LaunchTemplate": scope.launch_template_arn}}
    instance = _conditions(
        _tagged("Request", GATEWAY_TAG_VALUE),
        _has_job_tag("Request"),
        {
            "StringEquals": {"ec2:MetadataHttpTokens": "required"},
            "ArnEquals": {"ec2:InstanceProfile": list(scope.instance_profile_arns)},
        },
    )
    volume = _conditions(_tagged("Request", GATEWAY_TAG_VALUE), _has_job_tag("Request"))
    network = _conditions(_tagged("Resource", NETWORK_TAG_VALUE))
    group = _conditions(_tagged("Resource", NETWORK_TAG_VALUE), _has_job_tag("Resource"))
    here = Aws.REGION
    statements = [
        iam.PolicyStatement(
            sid="Ec2RunGatewayFromTemplate",
            actions=["ec2:RunInstances"],
            resources=[_ec2("instance/*", region=here)],
            conditions=_conditions(template, instance),
        ),
        iam.PolicyStatement(
            sid="Ec2RunGatewayVolumeFromTemplate",
            actions=["ec2:RunInstances"],
            resources=[_ec2("volume/*", region=here)],
            conditions=_conditions(template, volume),
        ),
        iam.PolicyStatement(
            sid="Ec2RunTemplateImage",
            actions=["ec2:RunInstances"],
            resources=[_ec2("image/*", region=here, account=None)],
            conditions=_conditions(template, {"Bool": {"ec2:IsLaunchTemplateResource": "true"}}),
        ),
        iam.PolicyStatement(
            sid="Ec2RunWithTemplate",
            actions=["ec2:RunInstances"],
            resources=[
                scope.launch_template_arn,
                _ec2("network-interface/*", region=here),
            ],
            conditions=template,
        ),
        iam.PolicyStatement(
            sid="Ec2RunInSkyhopSubnet",
            actions=["ec2:RunInstances"],
            resources=[_ec2("subnet/*", region=here)],
            conditions=_conditions(template, network),
        ),
        iam.PolicyStatement(
            sid="Ec2RunInJobGroup",
            actions=["ec2:RunInstances"],
            resources=[_ec2("security-group/*", region=here)],
            conditions=_conditions(template, group),
        ),
        iam.PolicyStatement(
            sid="PassGatewayRole",
            actions=["iam:PassRole"],
            resources=list(scope.gateway_role_arns),
            conditions={"StringEquals": {"iam:PassedToService": "ec2.amazonaws.com"}},
        ),
    ]
    if scope.other_regions:
        # Regions without the stack's template: the same checks, Amazon's own image.
        #
        # Why no template there: a launch template is regional (RunInstances in a
        # region names a template of that region only), and the stack, one
        # CloudFormation stack in one region, makes its template in its own region.
        # Letting the functions make one in each gateway region and requiring it
        # would add nothing: CreateLaunchTemplate can be conditioned on request tags
        # only (no image, instance-profile or metadata keys), so a role that may
        # make a template may put any image in it, and "a template skyhop made" is
        # then no narrower than what these statements check on the request itself
        # (an Amazon-owned image, IMDSv2, a gateway profile, the tags, a skyhop
        # subnet and a job's group). What remains wider than in the stack's region:
        # any Amazon-owned AMI (not only the template's), the request's instance type
        # and block devices. Closing it needs a template made by CloudFormation in
        # each gateway region, which no function may create, change or tag (a stack
        # per gateway region, its launch-template resource conditioned on its
        # skyhop:stack tag); skyhop.compute.ec2 already takes a template name per
        # region (launch_templates). README "Permissions" says the same.
        elsewhere: dict[str, dict[str, Any]] = {
            "StringEquals": {"aws:RequestedRegion": scope.other_regions},
            "StringNotEquals": {"aws:RequestedRegion": here},
        }
        statements += [
            iam.PolicyStatement(
                sid="Ec2RunGatewayElsewhere",
                actions=["ec2:RunInstances"],
                resources=[_ec2("instance/*")],
                conditions=_conditions(elsewhere, instance),
            ),
            iam.PolicyStatement(
                sid="Ec2RunGatewayVolumeElsewhere",
                actions=["ec2:RunInstances"],
                resources=[_ec2("volume/*")],
                conditions=_conditions(elsewhere, volume),
            ),
            iam.PolicyStatement(
                sid="Ec2RunAmazonImageElsewhere",
                actions=["ec2:RunInstances"],
                resources=[_ec2("image/*", account=None)],
                conditions=_conditions(elsewhere, {"StringEquals": {"ec2:Owner": "amazon"}}),
            ),
            iam.PolicyStatement(
                sid="Ec2RunInterfaceElsewhere",
                actions=["ec2:RunInstances"],
                resources=[_ec2("network-interface/*")],
                conditions=elsewhere,
            ),
            iam.PolicyStatement(
                sid="Ec2RunInSkyhopSubnetElsewhere",
                actions=["ec2:RunInstances"],
                resources=[_ec2("subnet/*")],
                conditions=_conditions(elsewhere, network),
            ),
            iam.PolicyStatement(
                sid="Ec2RunInJobGroupElsewhere",
                actions=["ec2:RunInstances"],
                resources=[_ec2("security-group/*")],
                conditions=_conditions(elsewhere, group),
            ),
            iam.PolicyStatement(
                sid="ReadPublicAmiParameters",
                actions=["ssm:GetParameter"],
                resources=[
                    f"arn:{Aws.PARTITION}:ssm:*:*:parameter/aws/service/ami-amazon-linux-latest/*"
                ],
            ),
        ]
    return statements


def ec2_open_firewall(scope: Ec2Scope) -> list[iam.PolicyStatement]:
    """Admit a job's gateways in the job's own security group, each rule tagged with
    the job (never in the shared ``skyhop-gateways`` group, which has no job tag)."""
    regions = _in_regions(scope)
    return [
        iam.PolicyStatement(
            sid="Ec2OpenJobGroup",
            actions=["ec2:AuthorizeSecurityGroupIngress"],
            resources=[_ec2("security-group/*")],
            conditions=_conditions(
                regions, _tagged("Resource", NETWORK_TAG_VALUE), _has_job_tag("Resource")
            ),
        ),
        iam.PolicyStatement(
            sid="Ec2JobRules",
            actions=["ec2:AuthorizeSecurityGroupIngress"],
            resources=[_ec2("security-group-rule/*")],
            conditions=_conditions(regions, _has_job_tag("Request")),
        ),
        iam.PolicyStatement(
            sid="Ec2TagJobRules",
            actions=["ec2:CreateTags"],
            resources=[_ec2("security-group-rule/*")],
            conditions=_conditions(
                regions,
                _has_job_tag("Request"),
                {"StringEquals": {"ec2:CreateAction": "AuthorizeSecurityGroupIngress"}},
            ),
        ),
    ]


def ec2_teardown(scope: Ec2Scope) -> list[iam.PolicyStatement]:
    """Close firewalls, delete jobs' security groups and terminate gateways: only this
    stack's gateways (their instance profile is the stack's) and skyhop's groups."""
    regions = _in_regions(scope)
    return [
        iam.PolicyStatement(
            sid="Ec2TerminateStackGateways",
            actions=["ec2:TerminateInstances"],
            resources=[_ec2("instance/*")],
            conditions=_conditions(
                regions,
                _tagged("Resource", GATEWAY_TAG_VALUE),
                {"ArnEquals": {"ec2:InstanceProfile": list(scope.instance_profile_arns)}},
            ),
        ),
        iam.PolicyStatement(
            sid="Ec2CloseSkyhopGroups",
            actions=["ec2:RevokeSecurityGroupIngress"],
            resources=[_ec2("security-group/*")],
            conditions=_conditions(regions, _tagged("Resource", NETWORK_TAG_VALUE)),
        ),
        iam.PolicyStatement(
            sid="Ec2DeleteJobGroups",
            actions=["ec2:DeleteSecurityGroup"],
            resources=[_ec2("security-group/*")],
            conditions=_conditions(
                regions, _tagged("Resource", NETWORK_TAG_VALUE), _has_job_tag("Resource")
            ),
        ),
    ]


# ---------------------------------------------------------------- KMS


def kms_wrap(key_arn: str, gateway_role_arn: str) -> list[iam.PolicyStatement]:
    """Create and wrap a job's data key and grant ``Decrypt`` for that job only to
    ``gateway_role_arn`` (the destination gateways' role: no other role gets a key)."""
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
# SetQueueAttributes puts on each queue the policy that denies every EC2 instance
# but its gateway's (SQSControlQueues.restrict_to_instance): the gateway roles'
# statement below covers every queue under the prefix, the queue policy narrows it.

CONTROL_QUEUE_ACTIONS = [
    "sqs:CreateQueue",
    "sqs:TagQueue",
    "sqs:SetQueueAttributes",
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
    """Create a job's control queues (each closed to every instance but its gateway's),
    send gateways their orders, find and delete them."""
    return [
        iam.PolicyStatement(
            sid="ManageControlQueues",
            actions=CONTROL_QUEUE_ACTIONS,
            resources=[control_queue_arn(prefix)],
        ),
        iam.PolicyStatement(sid="ListControlQueues", actions=["sqs:ListQueues"], resources=["*"]),
    ]


def control_queues_consume(prefix: str) -> iam.PolicyStatement:
    """A gateway takes (receives and deletes) the orders from its control queue: IAM
    admits every queue under the prefix (an instance profile's session carries no tag
    of its job), each queue's own policy denies every instance but its gateway's."""
    return iam.PolicyStatement(
        sid="TakeControlMessages",
        actions=CONTROL_QUEUE_GATEWAY_ACTIONS,
        resources=[control_queue_arn(prefix)],
    )


def sign_gateway_wheel(object_arn: str) -> iam.PolicyStatement:
    """Read (so as to presign a URL of) the gateways' skyhop wheel, that one object."""
    return iam.PolicyStatement(
        sid="SignGatewayWheel", actions=["s3:GetObject"], resources=[object_arn]
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
    sid: str, buckets: Iterable[str], rules: DataAccess | None = None
) -> list[iam.PolicyStatement]:
    """The S3 access of the transfer path (submit, finishing functions, gateways).

    The ad-hoc ``transferBuckets`` are read and written whole. The rules' buckets
    only as the rules use them (the bulk copies ``bucket_events`` hands to
    ``submit``): each source prefix read-only, each S3 destination prefix written;
    sources selected by tag are read (never written) in this account's buckets.
    Nothing on this path deletes.
    """
    statements = _whole_buckets(
        sid,
        buckets,
        sorted(set(S3_BUCKET_READ + S3_BUCKET_WRITE)),
        sorted(set(S3_OBJECT_READ + S3_OBJECT_WRITE)),
    )
    if rules is not None:
        statements += _rules_access(f"{sid}Rule", rules, deletes=False, bucket_tags=False)
    return statements


def _whole_buckets(
    sid: str, buckets: Iterable[str], bucket_actions: list[str], object_actions: list[str]
) -> list[iam.PolicyStatement]:
    """``bucket_actions`` on each of ``buckets`` and ``object_actions`` on all their
    objects (none when there are no buckets)."""
    names = sorted(set(buckets))
    if not names:
        return []
    return [
        iam.PolicyStatement(
            sid=f"{sid}Buckets", actions=bucket_actions, resources=[_s3(b) for b in names]
        ),
        iam.PolicyStatement(
            sid=f"{sid}Objects", actions=object_actions, resources=[_s3(f"{b}/*") for b in names]
        ),
    ]


def s3_source_gateway_access(
    sid: str, buckets: Iterable[str], rules: DataAccess | None = None
) -> list[iam.PolicyStatement]:
    """A source gateway reads: the transfer buckets and the rules' sources, read-only."""
    statements = _whole_buckets(sid, buckets, S3_BUCKET_READ, S3_OBJECT_READ)
    if rules is not None:
        reads = dataclasses.replace(rules, destinations=())
        statements += _rules_access(f"{sid}Rule", reads, deletes=False, bucket_tags=False)
    return statements


def s3_destination_gateway_access(
    sid: str, buckets: Iterable[str], rules: DataAccess | None = None
) -> list[iam.PolicyStatement]:
    """A destination gateway writes (and reads back what it wrote, for its checks):
    the transfer buckets and the rules' S3 destinations, never a source, never deletes."""
    statements = _whole_buckets(sid, buckets, S3_BUCKET_WRITE, S3_OBJECT_WRITE)
    if rules is not None:
        writes = dataclasses.replace(rules, sources=(), tagged_sources=False)
        statements += _rules_access(f"{sid}Rule", writes, deletes=False, bucket_tags=False)
    return statements


def s3_replication_access(access: DataAccess) -> list[iam.PolicyStatement]:
    """What the bucket-events function needs for the rules: read each source prefix, write
    (and, for rules that propagate deletes, delete) under each destination prefix."""
    return _rules_access("Replication", access, deletes=True, bucket_tags=True)


def _rules_access(
    sid: str, access: DataAccess, *, deletes: bool, bucket_tags: bool
) -> list[iam.PolicyStatement]:
    statements: list[iam.PolicyStatement] = []
    if access.sources:
        statements.append(
            iam.PolicyStatement(
                sid=f"{sid}SourceBuckets",
                actions=S3_BUCKET_READ,
                resources=sorted({_s3(b) for b, _ in access.sources}),
            )
        )
        statements.append(
            iam.PolicyStatement(
                sid=f"{sid}SourceObjects",
                actions=S3_OBJECT_READ,
                resources=sorted({_s3(f"{b}/{p}*") for b, p in access.sources}),
            )
        )
    if access.tagged_sources:
        # A bucket_tag rule's buckets are known only by their tag at run time, and
        # S3's classic keys for object actions name no bucket tag
        # (s3:ExistingObjectTag is the object's own; S3's ABAC, aws:ResourceTag on a
        # bucket's tags, is off unless enabled bucket by bucket): every bucket of
        # this account (s3:ResourceAccount), read-only; bucket_events checks the tag
        # (s3:GetBucketTagging) before it copies.
        statements.append(
            iam.PolicyStatement(
                sid=f"{sid}TaggedSourceBuckets",
                actions=S3_BUCKET_READ + (["s3:GetBucketTagging"] if bucket_tags else []),
                resources=[_s3("*")],
                conditions=_own_account(),
            )
        )
        statements.append(
            iam.PolicyStatement(
                sid=f"{sid}TaggedSourceObjects",
                actions=S3_OBJECT_READ,
                resources=[_s3("*/*")],
                conditions=_own_account(),
            )
        )
    if access.destinations:
        statements.append(
            iam.PolicyStatement(
                sid=f"{sid}DestinationBuckets",
                actions=S3_BUCKET_WRITE,
                resources=sorted({_s3(b) for b, _, _ in access.destinations}),
            )
        )
        statements.append(
            iam.PolicyStatement(
                sid=f"{sid}DestinationObjects",
                actions=S3_OBJECT_WRITE,
                resources=sorted({_s3(f"{b}/{p}*") for b, p, _ in access.destinations}),
            )
        )
        removed = sorted({_s3(f"{b}/{p}*") for b, p, d in access.destinations if d})
        if deletes and removed:
            statements.append(
                iam.PolicyStatement(
                    sid=f"{sid}DestinationDeletes",
                    actions=["s3:DeleteObject"],
                    resources=removed,
                )
            )
    return statements


# ---------------------------------------------------------------- wildcard reasons
#
# Why each statement that names a wildcard resource needs it (cdk-nag's
# AwsSolutions-IAM5 finding is acknowledged with this text; infra_cdk.nag).

_RUNTIME_EC2 = "EC2 resources made per job at run time have no id before deployment"
_OBJECTS = "objects are named at run time"
WILDCARD_REASONS: dict[str, str] = {
    "Ec2Describe": "EC2 Describe* calls support no resource-level permissions",
    "ListControlQueues": (
        "sqs:ListQueues supports no resource-level permissions (it only lists the "
        "names under the stack's control-queue prefix, to find a crashed job's queues)"
    ),
    "ManageControlQueues": (
        "one control queue per gateway, named PREFIX-JOB--GATEWAY at run time; the "
        "prefix is this stack's, so another stack's queues are out of reach"
    ),
    "TakeControlMessages": (
        "a gateway's control queue is named PREFIX-JOB--GATEWAY at run time; the prefix "
        "is this stack's"
    ),
    "WriteOwnLogs": "Lambda creates the log streams of the function's own log group at run time",
    "ManifestTable": "the manifest table's own indexes (skyhop.state.dynamodb's GSIs)",
    "Ec2CreateSkyhopVpc": f"{_RUNTIME_EC2}: only a VPC tagged skyhop=network, in the stack's regions",
    "Ec2CreateTaggedNetwork": (
        f"{_RUNTIME_EC2}: only subnets, route tables, internet gateways and security groups "
        "tagged skyhop=network, in the stack's regions"
    ),
    "Ec2ChangeSkyhopNetwork": (
        f"{_RUNTIME_EC2}: only inside a VPC, subnet and internet gateway tagged skyhop=network"
    ),
    "Ec2RouteSkyhopSubnet": (
        f"{_RUNTIME_EC2}: only route tables and subnets tagged skyhop=network (a route "
        "table gets that tag only from the CreateRouteTable that makes it in a skyhop VPC)"
    ),
    "Ec2TagOnCreate": f"{_RUNTIME_EC2}: tags only in the call that creates the resource",
    "Ec2RunGatewayFromTemplate": (
        f"{_RUNTIME_EC2}: only from the stack's launch template, IMDSv2, the gateway "
        "instance profile, tagged skyhop=gateway with its job"
    ),
    "Ec2RunGatewayVolumeFromTemplate": f"{_RUNTIME_EC2}: only from the stack's launch template",
    "Ec2RunTemplateImage": "only the AMI of the stack's launch template (ec2:IsLaunchTemplateResource)",
    "Ec2RunWithTemplate": f"{_RUNTIME_EC2}: only with the stack's launch template",
    "Ec2RunInSkyhopSubnet": f"{_RUNTIME_EC2}: only a subnet tagged skyhop=network",
    "Ec2RunInJobGroup": f"{_RUNTIME_EC2}: only a job's own security group",
    "Ec2RunGatewayElsewhere": (
        f"{_RUNTIME_EC2}: gateway regions without the stack's template; IMDSv2, the "
        "gateway instance profile, tagged skyhop=gateway with its job"
    ),
    "Ec2RunGatewayVolumeElsewhere": f"{_RUNTIME_EC2}: tagged skyhop=gateway with its job",
    "Ec2RunAmazonImageElsewhere": (
        "Amazon Linux's public AMI is looked up at run time in regions without the stack's "
        "template: only Amazon-owned images (ec2:Owner=amazon)"
    ),
    "Ec2RunInterfaceElsewhere": f"{_RUNTIME_EC2}: in the listed gateway regions only",
    "Ec2RunInSkyhopSubnetElsewhere": f"{_RUNTIME_EC2}: only a subnet tagged skyhop=network",
    "Ec2RunInJobGroupElsewhere": f"{_RUNTIME_EC2}: only a job's own security group",
    "ReadPublicAmiParameters": "Amazon Linux 2023's public AMI parameters in each gateway region",
    "Ec2OpenJobGroup": f"{_RUNTIME_EC2}: only a job's own security group",
    "Ec2JobRules": f"{_RUNTIME_EC2}: only rules tagged with their job",
    "Ec2TagJobRules": f"{_RUNTIME_EC2}: only the job tag, while authorizing the rule",
    "Ec2TerminateStackGateways": (
        f"{_RUNTIME_EC2}: only instances tagged skyhop=gateway that carry this stack's "
        "gateway instance profile"
    ),
    "Ec2CloseSkyhopGroups": f"{_RUNTIME_EC2}: only security groups tagged skyhop=network",
    "Ec2DeleteJobGroups": f"{_RUNTIME_EC2}: only jobs' own security groups",
    "TransferDataObjects": f"the objects of the configured transferBuckets ({_OBJECTS})",
    "SourceGatewayReadObjects": (
        f"read-only, the objects of the configured transferBuckets ({_OBJECTS})"
    ),
    "SourceGatewayReadRuleSourceObjects": (
        f"read-only, under each rule's source prefix ({_OBJECTS})"
    ),
    "SourceGatewayReadRuleTaggedSourceBuckets": (
        "a bucket_tag rule's buckets are only known by their tag at run time: read-only, "
        "this account's buckets (s3:ResourceAccount)"
    ),
    "SourceGatewayReadRuleTaggedSourceObjects": (
        "a bucket_tag rule's objects: read-only, this account's buckets (s3:ResourceAccount)"
    ),
    "DestinationGatewayWriteObjects": (
        f"written, the objects of the configured transferBuckets ({_OBJECTS})"
    ),
    "DestinationGatewayWriteRuleDestinationObjects": (
        f"under each rule's S3 destination prefix ({_OBJECTS})"
    ),
    "TransferDataRuleSourceObjects": f"read-only, under each rule's source prefix ({_OBJECTS})",
    "TransferDataRuleDestinationObjects": f"under each rule's S3 destination prefix ({_OBJECTS})",
    "TransferDataRuleTaggedSourceBuckets": (
        "a bucket_tag rule's buckets are only known by their tag at run time: read-only, "
        "this account's buckets (s3:ResourceAccount)"
    ),
    "TransferDataRuleTaggedSourceObjects": (
        "a bucket_tag rule's objects: read-only, this account's buckets (s3:ResourceAccount)"
    ),
    "ReplicationSourceObjects": f"read-only, under each rule's source prefix ({_OBJECTS})",
    "ReplicationDestinationObjects": f"under each rule's S3 destination prefix ({_OBJECTS})",
    "ReplicationDestinationDeletes": (
        f"under the destination prefix of rules that propagate deletes ({_OBJECTS})"
    ),
    "ReplicationTaggedSourceBuckets": (
        "a bucket_tag rule's buckets are only known by their tag at run time: read-only "
        "(and their tags), this account's buckets (s3:ResourceAccount)"
    ),
    "ReplicationTaggedSourceObjects": (
        "a bucket_tag rule's objects: read-only, this account's buckets (s3:ResourceAccount)"
    ),
}

# Statements CDK adds itself (no Sid), by action.
_XRAY = "X-Ray's PutTraceSegments and PutTelemetryRecords support no resource-level permissions"
CDK_WILDCARD_REASONS: dict[str, str] = {
    "xray:PutTraceSegments": _XRAY,
    "xray:PutTelemetryRecords": _XRAY,
}
