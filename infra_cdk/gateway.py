"""The gateway VMs' identity and launch template (the compute provider launches them per job)."""

from __future__ import annotations

import jsii
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_iam as iam
from constructs import Construct


@jsii.implements(ec2.IMachineImage)
class PinnedImage:
    """One AMI id, used as it is (``gatewayAmiId``): no lookup, no region mapping."""

    def __init__(self, ami_id: str) -> None:
        self.ami_id = ami_id

    def get_image(self, scope: Construct) -> ec2.MachineImageConfig:  # noqa: ARG002
        """The image config CDK asks every machine image for."""
        return ec2.MachineImageConfig(
            image_id=self.ami_id,
            os_type=ec2.OperatingSystemType.LINUX,
            user_data=ec2.UserData.for_linux(),
        )


class GatewayFleet(Construct):
    """Role, instance profile and launch template for gateway VMs in the stack's region.

    The launch template fixes what every gateway shares: instance type, AMI
    (latest Amazon Linux 2023 unless ``gatewayAmiId`` pins one), IMDSv2 only,
    an encrypted gp3 root volume, terminate-on-shutdown, the instance profile
    and the ``skyhop`` tag. ``skyhop.compute.ec2`` uses it by name in this
    region and adds the per-job parts to ``RunInstances``: user data with the
    gateway configuration, the skyhop network's subnet and security group, and
    tags (``skyhop=gateway``, required by the functions' IAM conditions). The
    role's permissions are granted by the stack; it can unwrap a job's data key
    only through the KMS grant the provider creates for that job.
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
        self.role = iam.Role(
            self,
            "Role",
            assumed_by=iam.ServicePrincipal("ec2.amazonaws.com"),
            description="skyhop gateway VMs: move chunks, post events, unwrap data keys",
        )
        self.instance_profile = iam.InstanceProfile(self, "InstanceProfile", role=self.role)
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
            instance_profile=self.instance_profile,
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
