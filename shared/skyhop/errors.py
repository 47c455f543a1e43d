"""The error family of skyhop.

Every error a user can cause or meet is a :class:`SkyhopError` whose ``str`` is
one line naming the problem; the CLI prints it and exits non-zero, without a
traceback. Subpackages raise these (or subclasses they own), never a cloud
SDK's exception.
"""

from __future__ import annotations


class SkyhopError(Exception):
    """Base class: a one-line, user-facing message."""

    exit_code: int = 1


class UsageError(SkyhopError):
    """Bad input from the user: a malformed URI, an unknown option value."""

    exit_code = 2


class NotFoundError(SkyhopError):
    """A source, bucket, job or object that does not exist."""


class AccessError(SkyhopError):
    """Missing credentials or permission denied."""


class StoreError(SkyhopError):
    """An object store failed; ``retryable`` says whether trying again may help."""

    def __init__(self, message: str, *, retryable: bool = False) -> None:
        super().__init__(message)
        self.retryable = retryable


class ThrottledError(StoreError):
    """The store asked us to slow down (HTTP 429, 503 SlowDown); always retryable.

    :class:`skyhop.retry.Pacer` widens the gap between calls when it sees one.
    """

    def __init__(self, message: str) -> None:
        super().__init__(message, retryable=True)


class PreconditionFailed(StoreError):
    """An object changed while it was being read (ETag / generation mismatch)."""


class ConflictError(SkyhopError):
    """A conditional write lost: the record was not in the expected state."""


class IntegrityError(SkyhopError):
    """A chunk or object failed verification (checksum, authentication tag, size)."""


class GatewayError(SkyhopError):
    """A gateway could not be started, reached or died during a job."""


class PlanError(SkyhopError):
    """The planner cannot satisfy a request (unknown region, infeasible target)."""
