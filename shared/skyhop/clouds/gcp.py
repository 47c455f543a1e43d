"""The GCP kit: google-api-core and google-auth errors as :mod:`skyhop.errors`.

:func:`known` says what every Google API means alike (not found, access
denied, no usable credentials) and :func:`short` is the one-line detail; an
adapter checks what is its own first (an existing topic, a pull that timed
out, a changed object), asks :func:`known`, and decides the rest (which errors
are worth retrying differs between Storage, Pub/Sub and Compute).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from google.api_core import exceptions as gexc
from google.auth import exceptions as auth_exc
from google.auth.credentials import AnonymousCredentials, Credentials

from skyhop.errors import AccessError, NotFoundError, SkyhopError, first_line

if TYPE_CHECKING:
    from google.oauth2 import service_account


# google-auth ships type information but leaves these constructors unannotated
# (mypy's no-untyped-call); the signatures skyhop relies on are declared here once.


def anonymous_credentials() -> Credentials:
    """Credentials that send none (an emulator, a public bucket)."""
    make: Callable[[], Credentials] = AnonymousCredentials
    return make()


def service_account_credentials(info: Mapping[str, Any]) -> service_account.Credentials:
    """The credentials of a service account key (its parsed JSON)."""
    from google.oauth2 import service_account  # only when a key is given: a slow import

    make: Callable[[Mapping[str, Any]], service_account.Credentials] = (
        service_account.Credentials.from_service_account_info
    )
    return make(info)


def short(exc: BaseException) -> str:
    """One line of a Google API exception (its ``message``, else its text)."""
    message = getattr(exc, "message", None) or str(exc)
    return first_line(message) or type(exc).__name__


def known(exc: Exception, what: str) -> SkyhopError | None:
    """Not found, access denied (401/403) or no usable credentials; None for the rest."""
    detail = short(exc)
    if isinstance(exc, gexc.NotFound):
        return NotFoundError(f"{what}: not found ({detail})")
    if isinstance(exc, gexc.Unauthorized | gexc.Forbidden):
        return AccessError(f"{what}: access denied ({detail})")
    if isinstance(exc, auth_exc.GoogleAuthError):
        return AccessError(f"{what}: no usable Google credentials ({detail})")
    return None
