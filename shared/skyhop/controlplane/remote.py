"""Jobs on a deployed control plane, seen from the CLI (``skyhop cp --on NAME``).

The remote job is the same :class:`~skyhop.models.Job` in the same state
machine: the CLI puts a :class:`~skyhop.models.TransferRequest` on the
control plane's requests queue (the :class:`~skyhop.queues.base.Queue`
protocol), finds the job the ``submit`` function made for its ``request_id``
in the control plane's manifest (the :class:`~skyhop.state.base.ManifestStore`
protocol), and follows it there: plan, progress and, at the end, the report
the control plane keeps with the job (``Job.report``). Orders for a job that
exists are messages on the same queue:

``start_job``
    a job created with ``hold`` (the CLI asks before it starts), or an
    interrupted one, starts;
``cancel_job``
    the job fails as cancelled, and in the cloud its gateways are terminated,
    its firewall rules revoked, its control queues deleted and its multipart
    uploads aborted (:meth:`ControlPlane.cancel`).

No cloud SDK is called here: both ends are opened by URI through the
registries (:func:`skyhop.state.open_manifest`, :func:`skyhop.queues.open_queue`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from skyhop.errors import AccessError, NotFoundError, SkyhopError
from skyhop.models import CancelJob, Job, JobState, StartJob, TransferRequest
from skyhop.queues.base import CheckableQueue, Queue, open_queue
from skyhop.remotes import ControlPlaneProfile
from skyhop.state.base import JobProgress, ManifestStore, open_manifest

#: how many of the newest jobs are searched for a request's job
FIND_SCAN = 200


@dataclass
class RemoteControlPlane:
    """One deployed control plane, by its profile."""

    name: str
    profile: ControlPlaneProfile
    _manifest: ManifestStore | None = field(default=None, repr=False)
    _requests: Queue | None = field(default=None, repr=False)

    @property
    def manifest(self) -> ManifestStore:
        if self._manifest is None:
            self._manifest = open_manifest(self.profile.manifest)
        return self._manifest

    @property
    def requests(self) -> Queue:
        if self._requests is None:
            self._requests = open_queue(self.profile.requests_queue)
        return self._requests

    def label(self) -> str:
        return f"{self.name} ({self.profile.cloud})"

    def check(self) -> None:
        """Reach the manifest and the requests queue before anything is sent: a
        one-line error naming the profile and what is wrong, nothing submitted."""
        fix = (
            f"is the control plane deployed? (`skyhop deploy {self.profile.cloud}`, or "
            f"`skyhop remote show {self.name}` to see the profile)"
        )
        try:
            self.manifest.list_jobs(1)
        except NotFoundError:
            raise NotFoundError(
                f"control plane {self.name!r}: its manifest {self.profile.manifest} "
                f"does not exist: {fix}"
            ) from None
        except SkyhopError as exc:
            raise type(exc)(
                f"control plane {self.name!r}: its manifest {self.profile.manifest}: {exc}"
            ) from None
        queue = self.requests
        if isinstance(queue, CheckableQueue):
            try:
                queue.check()
            except NotFoundError:
                raise NotFoundError(
                    f"control plane {self.name!r}: its requests queue "
                    f"{self.profile.requests_queue} does not exist: {fix}"
                ) from None
            except AccessError as exc:
                raise AccessError(f"control plane {self.name!r}: {exc}") from None

    # ------------------------------------------------------------ sending

    def submit(self, request: TransferRequest) -> None:
        self.requests.send(request.model_dump_json())

    def start(self, job_id: str) -> None:
        self.requests.send(StartJob(job_id=job_id).model_dump_json())

    def cancel(self, job_id: str, reason: str = "cancelled by the user") -> None:
        self.requests.send(CancelJob(job_id=job_id, reason=reason).model_dump_json())

    # ------------------------------------------------------------ reading

    def job(self, job_id: str) -> Job:
        found = self.manifest.get_job(job_id)
        if found is None:
            raise NotFoundError(f"control plane {self.name!r} has no job {job_id!r}")
        return found

    def progress(self, job_id: str) -> JobProgress:
        return self.manifest.progress(job_id)

    def find_job(self, request_id: str) -> Job | None:
        """The job the control plane made for ``request_id``, if it made one yet."""
        for job in self.manifest.list_jobs(limit=FIND_SCAN):
            if job.request.request_id == request_id:
                return job
        return None

    def wait_for_job(
        self,
        request_id: str,
        *,
        timeout: float,
        interval: float = 0.25,
        tick: Callable[[], None] | None = None,
    ) -> Job | None:
        """Poll until the job of ``request_id`` exists; None after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            found = self.find_job(request_id)
            if found is not None:
                return found
            if time.monotonic() >= deadline:
                return None
            if tick is not None:
                tick()
            time.sleep(interval)

    def wait(
        self,
        job_id: str,
        until: Callable[[Job], bool],
        *,
        timeout: float | None = None,
        interval: float = 0.5,
        on_progress: Callable[[Job, JobProgress], None] | None = None,
    ) -> Job:
        """Poll the job until ``until(job)``; calls ``on_progress`` on every poll.
        Returns the job as last read (``until`` may not hold after ``timeout``)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            job = self.job(job_id)
            if on_progress is not None:
                on_progress(job, self.progress(job_id))
            if until(job) or (deadline is not None and time.monotonic() >= deadline):
                return job
            time.sleep(interval)


def planned(job: Job) -> bool:
    """Listing and planning are over: the job is planned, running or finished."""
    return job.state not in (JobState.CREATED,)


def finished(job: Job) -> bool:
    """The job ended and its report is kept with it (a request the control plane
    refused gets a failed job whose report names why)."""
    return job.state.finished and job.report is not None
