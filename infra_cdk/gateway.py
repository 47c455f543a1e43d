"""The gateway VMs' identity and launch template (the compute provider launches them per job)."""

from __future__ import annotations

import tempfile
from pathlib import Path

import jsii
from aws_cdk import ArnFormat, Stack
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_iam as iam
from aws_cdk import aws_s3_assets as s3_assets
from constructs import Construct

from skyhop.compute.package import build_wheel, pinned_requirements, sha256_of


@jsii.implements(ec2.IMachineImage)
class PinnedImage:
    """One AMI id, used as it is (``gatewayAmiId``): no lookup, no region mapping."""

    def __init__(self, ami_id: str) -> None:
        self.ami_id = ami_id

    def get_image(self, scope: Construct) -> ec2.MachineImageConfig:
        """The image config CDK asks every machine image for."""
        return ec2.MachineImageConfig(
            image_id=self.ami_id,
            os_type=ec2.OperatingSystemType.LINUX,
            user_data=ec2.UserData.for_linux(),
        )


# What the launch template tags a gateway's instance and volume with (the stack's name).
STACK_TAG_KEY = "skyhop:stack"

# The gateway roles (skyhop.models.GatewayRole) and what each one's identity may do.
ROLE_DUTIES = {
    "source": "read the source, take orders, post events",
    "relay": "forward sealed chunks: take orders, post events, no storage",
    "destination": "write the destination, unwrap its job's data key, post events",
}


class GatewayFleet(Construct):
    """Roles, instance profiles and launch template for gateway VMs in the stack's region.

    The launch template fixes what every gateway shares: instance type, AMI
    (latest Amazon Linux 2023 unless ``gatewayAmiId`` pins one), IMDSv2 only,
    an encrypted gp3 root volume, terminate-on-shutdown, the relay's instance
    profile (each launch names its own role's: ``SKYHOP_GATEWAY_*_PROFILE_ARN``)
    and the ``skyhop`` tag. ``skyhop.compute.ec2`` uses it by name in this
    region and adds the per-job parts to ``RunInstances``: user data with the
    gateway configuration, the skyhop network's subnet and security group, and
    tags (``skyhop=gateway`` and the job, required by the functions' IAM conditions):
    the template tags instances and volumes only ``skyhop:stack=<stack>``, so the
    stack's own ``skyhop=<stack>`` tag never competes with the provider's
    ``skyhop=gateway`` (or its ``Name``) on the same key. The roles' permissions are
    granted by the stack; only the destination's can unwrap a job's data key, and only
    through the KMS grant the provider creates for that job.
    """

    def __init__(
        self,
        scope: Construct,
        id: str,
        *,
        instance_type: str,
        ami_id: str | None,
        volume_gib: int,
        template_name: str,
    ) -> None:
        super().__init__(scope, id)
        #: one IAM role (and instance profile) per gateway role: a relay's has no
        #: storage access at all, a source's reads, a destination's writes and may
        #: unwrap its job's data key (through the job's KMS grant)
        self.roles = {
            role: iam.Role(
                self,
                f"{role.title()}Role",
                assumed_by=iam.ServicePrincipal("ec2.amazonaws.com"),
                description=f"skyhop {role} gateway VMs: {what}",
            )
            for role, what in ROLE_DUTIES.items()
        }
        self.instance_profiles = {
            role: iam.InstanceProfile(self, f"{role.title()}InstanceProfile", role=self.roles[role])
            for role in ROLE_DUTIES
        }
        itype = ec2.InstanceType(instance_type)
        cpu = (
            ec2.AmazonLinuxCpuType.ARM_64
            if itype.architecture == ec2.InstanceArchitecture.ARM_64
            else ec2.AmazonLinuxCpuType.X86_64
        )
        image: ec2.IMachineImage = (
            PinnedImage(ami_id)
            if ami_id
            else ec2.MachineImage.latest_amazon_linux2023(
                cpu_type=cpu, kernel=ec2.AmazonLinux2023Kernel.DEFAULT
            )
        )
        self.launch_template = ec2.LaunchTemplate(
            self,
            "LaunchTemplate",
            launch_template_name=template_name,
            instance_type=itype,
            machine_image=image,
            # the least privileged by default; each launch names its role's profile
            instance_profile=self.instance_profiles["relay"],
            require_imdsv2=True,
            http_put_response_hop_limit=1,
            instance_initiated_shutdown_behavior=ec2.InstanceInitiatedShutdownBehavior.TERMINATE,
            ebs_optimized=True,
            block_devices=[
                ec2.BlockDevice(
                    device_name="/dev/xvda",
                    volume=ec2.BlockDeviceVolume.ebs(
                        volume_gib,
                        encrypted=True,
                        delete_on_termination=True,
                        volume_type=ec2.EbsDeviceVolumeType.GP3,
                    ),
                )
            ],
        )
        cfn = self.launch_template.node.default_child
        assert isinstance(cfn, ec2.CfnLaunchTemplate)
        cfn.add_property_override(
            "LaunchTemplateData.TagSpecifications",
            [
                {
                    "ResourceType": kind,
                    "Tags": [{"Key": STACK_TAG_KEY, "Value": Stack.of(self).node.id}],
                }
                for kind in ("instance", "volume")
            ],
        )

        # the gateways' own skyhop: the wheel of the code being deployed, which the
        # launching functions sign a URL of and the boot script installs by its SHA-256
        wheel = build_wheel(Path(tempfile.mkdtemp(prefix="skyhop-gateway-wheel-")))
        self.wheel_sha256 = sha256_of(wheel)
        self.wheel_asset = s3_assets.Asset(self, "Wheel", path=str(wheel))
        self.wheel = {
            "bucket": self.wheel_asset.s3_bucket_name,
            "key": self.wheel_asset.s3_object_key,
            "sha256": self.wheel_sha256,
            "filename": wheel.name,
            "requirements": pinned_requirements(),
        }

    @property
    def wheel_object_arn(self) -> str:
        """The wheel asset's object: what the launching functions may read (to sign)."""
        return self.wheel_asset.bucket.arn_for_objects(self.wheel_asset.s3_object_key)

    @property
    def launch_template_arn(self) -> str:
        """The template's ARN, what ``ec2:LaunchTemplate`` names in a launch's policy."""
        return Stack.of(self).format_arn(
            service="ec2",
            resource="launch-template",
            resource_name=self.launch_template.launch_template_id,
            arn_format=ArnFormat.SLASH_RESOURCE_NAME,
        )
