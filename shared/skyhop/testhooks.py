"""Fault-injection hooks (``SKYHOP_TEST_HOOKS``) are the test suite's, and only its.

A hook makes a gateway or the direct path misbehave on purpose (flip a bit, drop
a chunk, sleep): harmless in a test, an attack anywhere else. They are honoured
only in a process whose environment carries the test suite's marker,
``SKYHOP_TEST_SUITE`` (``tests/conftest.py`` sets it; no deployment, boot script,
function or CLI path does, and a cloud gateway runs under systemd with a clean
environment). Without it the control plane puts no hooks into a gateway's
configuration, and a gateway ignores any its configuration carries.
"""

from __future__ import annotations

import os

HOOKS = "SKYHOP_TEST_HOOKS"
MARKER = "SKYHOP_TEST_SUITE"


def enabled() -> bool:
    """Whether this process was started by the test suite."""
    return bool(os.environ.get(MARKER))


def raw() -> str:
    """``SKYHOP_TEST_HOOKS`` when the test suite started this process, else ``''``."""
    return os.environ.get(HOOKS, "") if enabled() else ""
