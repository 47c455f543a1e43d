"""Writing below a destination root without following symbolic links.

A local destination tree may hold links planted by someone else
(``dst/sub -> /etc``); a writer that opens ``dst/sub/passwd`` by path writes
``/etc/passwd``. Every write of :class:`~skyhop.stores.local.LocalStore` goes
through :func:`open_dir` instead: the root itself is opened as the user named
it (a root that is a link is the user's choice and is followed), and each
directory below it is opened with ``openat(..., O_NOFOLLOW | O_DIRECTORY)``
relative to its parent's descriptor, created with ``mkdirat`` when missing.
A link anywhere below the root fails the write with :class:`SymlinkRefused`
(naming the link); there is no window between a check and the use, since the
descriptor that was checked is the one written through. The file itself is
created as a fresh temporary name with ``O_EXCL | O_NOFOLLOW`` in that
directory and renamed over the final name (a link at the final name is
replaced, never written through).

File modes: a new file is private (0600) while it is written, and gets its
final mode just before the rename: the source's permission bits when the
source is a local file (``ObjectMeta.mode``), else ``0666`` minus the umask,
as any program creating a file would. Set-id and sticky bits are never carried.
"""

from __future__ import annotations

import errno
import os
import stat
import threading
from collections.abc import Callable, Iterable

from skyhop.errors import StoreError

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
#: a file is created private and gets its final mode before it is renamed into place
CREATE_MODE = 0o600
#: the permission bits carried from a local source (never set-id or sticky)
PERMISSION_BITS = 0o777

_umask: int | None = None
_umask_lock = threading.Lock()


class SymlinkRefused(StoreError):
    """A write would have followed a symbolic link below the destination root."""


def process_umask() -> int:
    """This process's umask, read without changing it (``/proc/self/status`` on
    Linux; elsewhere set and restored once, under a lock, and remembered)."""
    global _umask
    if _umask is not None:
        return _umask
    with _umask_lock:
        if _umask is None:
            found: int | None = None
            try:
                with open("/proc/self/status", encoding="ascii", errors="replace") as fh:
                    for line in fh:
                        if line.startswith("Umask:"):
                            found = int(line.split()[1], 8)
                            break
            except (OSError, ValueError):
                found = None
            if found is None:  # pragma: no cover - not Linux
                found = os.umask(0o022)
                os.umask(found)
            _umask = found
    return _umask


def final_mode(carried: int | None) -> int:
    """The mode a new file ends with: the carried source bits, or 0666 minus the umask."""
    if carried is not None:
        return carried & PERMISSION_BITS
    return 0o666 & ~process_umask()


def _refuse(parent_fd: int, name: str, shown: str, root: str) -> None:
    """Raise SymlinkRefused when ``name`` in ``parent_fd`` is a link (else return)."""
    try:
        st = os.lstat(name, dir_fd=parent_fd)
    except OSError:
        return
    if stat.S_ISLNK(st.st_mode):
        raise SymlinkRefused(
            f"refusing to write through {shown}: it is a symbolic link below the destination {root}"
        )


def open_dir(root: str, parts: Iterable[str], *, create: bool) -> int:
    """A descriptor of ``root/parts...``: ``root`` opened as named (following links,
    created with its parents when missing and ``create``), each part below it opened
    without following links (created when missing and ``create``).

    Raises SymlinkRefused for a link below the root, FileNotFoundError when a part
    is missing and not ``create``, and other OSErrors as they come."""
    try:
        fd = os.open(root, _DIR_FLAGS)
    except FileNotFoundError:
        if not create:
            raise
        os.makedirs(root, exist_ok=True)
        fd = os.open(root, _DIR_FLAGS)
    shown = root.rstrip("/") or ""
    try:
        for part in parts:
            shown = f"{shown}/{part}"
            try:
                child = os.open(part, _DIR_FLAGS | os.O_NOFOLLOW, dir_fd=fd)
            except FileNotFoundError:
                if not create:
                    raise
                try:
                    os.mkdir(part, 0o777, dir_fd=fd)
                except FileExistsError:
                    pass  # made by a concurrent writer, or a link: the open below decides
                try:
                    child = os.open(part, _DIR_FLAGS | os.O_NOFOLLOW, dir_fd=fd)
                except OSError as exc:
                    if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                        _refuse(fd, part, shown, root)
                    raise
            except OSError as exc:
                if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                    _refuse(fd, part, shown, root)
                raise
            os.close(fd)
            fd = child
    except BaseException:
        os.close(fd)
        raise
    return fd


def check_final_name(dir_fd: int, name: str, shown: str, root: str) -> None:
    """Refuse a link at the last component where the operation would follow it
    (a staging directory, a part directory); a file renamed over a link is fine."""
    _refuse(dir_fd, name, shown, root)


def write_all(fd: int, data: bytes | bytearray | memoryview) -> None:
    """Write all of ``data`` to ``fd``."""
    view = memoryview(data).cast("B")
    while view:
        n = os.write(fd, view)
        view = view[n:]


def write_file_at(
    dir_fd: int,
    name: str,
    tmp_name: str,
    fill: Callable[[int], None],
    *,
    mode: int,
) -> os.stat_result:
    """Create a fresh ``tmp_name`` in ``dir_fd`` (O_EXCL, O_NOFOLLOW, 0600), let
    ``fill`` write it through its descriptor, set ``mode`` and rename it over
    ``name``; the stat of the written file. The temporary file is removed on any
    failure."""
    fd = os.open(
        tmp_name,
        os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
        CREATE_MODE,
        dir_fd=dir_fd,
    )
    try:
        try:
            fill(fd)
            os.fchmod(fd, mode)
            st = os.fstat(fd)
        finally:
            os.close(fd)
        os.replace(tmp_name, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    except BaseException:
        unlink_at(dir_fd, tmp_name)
        raise
    return st


def unlink_at(dir_fd: int, name: str) -> None:
    """Remove ``name`` from ``dir_fd`` if it is there (never follows a link)."""
    try:
        os.unlink(name, dir_fd=dir_fd)
    except OSError:
        pass
