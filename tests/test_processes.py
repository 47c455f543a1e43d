"""skyhop.processes: whether a process is still there (a real child process each)."""

from __future__ import annotations

import os
import subprocess
import sys
import time

from skyhop.processes import pid_alive, process_alive, process_start_time


def test_a_running_process_is_alive_and_keeps_its_start_time():
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        assert pid_alive(child.pid)
        started = process_start_time(child.pid)
        assert started is not None and abs(started - time.time()) < 60
        assert process_alive(child.pid, started)
        assert not process_alive(child.pid, started - 3600)  # another process, same pid
    finally:
        child.kill()
        child.wait()


def test_an_exited_child_is_gone_before_and_after_it_is_reaped():
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    deadline = time.monotonic() + 30
    while pid_alive(child.pid):  # a zombie until waited for: already gone
        assert time.monotonic() < deadline, "the exited child still counts as alive"
        time.sleep(0.05)
    child.wait()
    assert not pid_alive(child.pid)
    assert not process_alive(child.pid, None) and not process_alive(None, None)


def test_this_process_is_alive():
    assert pid_alive(os.getpid()) and process_alive(os.getpid(), process_start_time(os.getpid()))
