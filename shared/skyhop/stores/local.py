"""The local filesystem as an ObjectStore (and MultipartWriter).

Keys are absolute paths without their leading ``/`` (``home/me/data/a.bin``),
so the store's root is ``/``. Listing walks directories depth-first, one
directory in memory at a time, and yields keys in true lexicographic order of
their UTF-8 bytes, the order S3 uses: a directory ``a`` sorts as ``a/``, so
``a-c`` comes before ``a/b`` and ``a0`` after it.

Writes are atomic: a temporary file in the destination directory, then
``os.replace``. Multipart parts are staged in a hidden directory
``.skyhop-mpu-<upload id>`` beside the destination file; names starting with
``.skyhop-`` are never listed. A temporary file is named
``.skyhop-tmp-<host>-<pid>-<random>``; a writer entering a directory for the
first time removes temporary files of this host whose writer process is gone
(a crashed or killed gateway), so a resumed job leaves no debris. The ETag used to pin a version is
``<st_mtime_ns>-<size>-<inode>-<st_ctime_ns>`` (hex): a file swapped for another
of the same size and mtime (``cp -p``, ``rsync -t``, ``tar x``) has another
inode, and one rewritten in place with its mtime set back has a later ctime,
which nothing can set back. Every read of a part checks it.

Every write also keeps, with the file, the CRC32C of the bytes written: an
extended attribute ``user.skyhop.crc32c`` set on the temporary file before it
takes the key's name (so a file and its checksum appear together), recording
the size, mtime and inode it was computed for. ``head`` and ``list`` report it
as ``checksums["crc32c"]`` while the file still has them, which is what makes a
local destination's listing check a check of content (as the clouds' own
checksums do), e.g. when two jobs wrote one key. A file system without user
attributes, or a file written by anything else, has no checksum: size only.
A rewrite in place that also puts the mtime back (see the ETag) is the one
change the attribute cannot see.

The store's root is the location it was opened at (the job's destination, or
the directory of a single destination file). Every write, delete and staging
step goes through :mod:`skyhop.stores.localfs`: the root is opened as named,
every directory below it without following a symbolic link, so a link planted
in the destination tree fails that one object (SymlinkRefused, naming the
link) instead of being written through; a key outside the root follows no
link at all. A new file gets the source's permission bits when the source is
a local file (``ObjectMeta.mode``), else 0666 minus the umask.
"""

from __future__ import annotations

import builtins
import errno
import logging
import mmap
import os
import shutil
import socket
import stat
import threading
import uuid
from collections.abc import Iterator, Mapping

from skyhop.errors import (
    AccessError,
    IntegrityError,
    NotFoundError,
    PreconditionFailed,
    StoreError,
    UsageError,
)
from skyhop.integrity import combine_chunks, crc32c_extend
from skyhop.processes import pid_alive
from skyhop.stores import localfs
from skyhop.stores.base import BaseStore, Capabilities, ObjectInfo, ObjectMeta
from skyhop.stores.mtime import KEPT_PRECISION, to_ns
from skyhop.uri import StoreURI

HIDDEN_PREFIX = ".skyhop-"

log = logging.getLogger("skyhop.stores.local")
_MPU_PREFIX = HIDDEN_PREFIX + "mpu-"
_TMP_PREFIX = HIDDEN_PREFIX + "tmp-"
_MAX_PARTS = 10_000
_HOST = socket.gethostname().replace("-", "_") or "host"
_SWEPT: set[str] = set()
_SWEPT_LOCK = threading.Lock()


def _tmp_name() -> str:
    """A fresh temporary file name that records host and writer pid."""
    return f"{_TMP_PREFIX}{_HOST}-{os.getpid()}-{uuid.uuid4().hex}"


def _sweep_stale(directory: str, dir_fd: int) -> None:
    """Remove this host's temporary files in ``directory`` (open as ``dir_fd``) whose
    writer is gone (once per directory per process; a live writer's file is never
    touched)."""
    with _SWEPT_LOCK:
        if directory in _SWEPT:
            return
        _SWEPT.add(directory)
    mine = f"{_TMP_PREFIX}{_HOST}-"
    try:
        with os.scandir(dir_fd) as entries:
            names = [e.name for e in entries if e.name.startswith(mine)]
    except OSError:
        return
    for name in names:
        pid_text = name[len(mine) :].partition("-")[0]
        if pid_text.isdigit() and not pid_alive(int(pid_text)):
            localfs.unlink_at(dir_fd, name)


def _etag(st: os.stat_result) -> str:
    return f"{st.st_mtime_ns:x}-{st.st_size:x}-{st.st_ino:x}-{st.st_ctime_ns:x}"


def _sort_key(name: str) -> bytes:
    return os.fsencode(name)


class LocalStore(BaseStore):
    """Files under ``/`` addressed by their path without the leading slash."""

    #: put / upload_part take any bytes-like object and keep no reference to it
    capabilities = Capabilities(
        conditional_read=True,
        accepts_buffers=True,
        min_part_size=1,
        # parts are staged as files and joined at completion (one more copy of the
        # bytes): whole files up to 128 MiB, larger ones in 64 MiB parts; 4 at once
        # keeps 2 cores busy between reads and writes
        part_size=64 * 1024 * 1024,
        multipart_threshold=128 * 1024 * 1024,
        concurrency=4,
    )

    def __init__(self, uri: StoreURI) -> None:
        if uri.scheme != "local":
            raise UsageError(f"LocalStore cannot open {uri}")
        self.uri = uri.with_key("")
        self._opened_at = uri.key
        self._root: str | None = None

    # ------------------------------------------------------------ the write root

    @property
    def root(self) -> str:
        """The absolute directory below which writes follow no symbolic link: the
        location the store was opened at when it is (or will be) a directory, else
        the directory of that file. Decided on first use."""
        if self._root is None:
            path = self.path(self._opened_at) if self._opened_at else "/"
            if not (path.endswith("/") or os.path.isdir(path)):
                path = os.path.dirname(path)
            self._root = path.rstrip("/") or "/"
        return self._root

    def _parent_fd(self, path: str, *, create: bool) -> tuple[int, str]:
        """A descriptor of the directory holding ``path`` (reached from the root
        without following links below it) and the final name. FileNotFoundError
        when a directory is missing and not ``create``; SymlinkRefused for a link."""
        parent, name = os.path.split(path)
        root = self.root
        if root == "/" or not (parent == root or parent.startswith(root + "/")):
            root = "/"  # outside the root: no link is followed anywhere
        rel = parent[len(root) :] if root != "/" else parent
        return localfs.open_dir(root, [p for p in rel.split("/") if p], create=create), name

    # ------------------------------------------------------------ helpers

    @staticmethod
    def path(key: str) -> str:
        """The filesystem path of ``key``.

        A key from another store may hold ``..``, ``.`` or empty segments (S3 takes
        ``a/../../b`` as a name like any other); as a path it would name another
        place, so it is refused (never written outside the destination)."""
        if "\x00" in key:
            raise UsageError("malformed key: contains a NUL byte")
        rel = key.lstrip("/")
        parts = rel.split("/")
        if "." in parts or ".." in parts or "" in parts[:-1]:
            raise StoreError(
                f"key {key!r} cannot be a local path: a '.', '..' or empty segment "
                "would put it somewhere else"
            )
        return "/" + rel

    @staticmethod
    def _key(path: str) -> str:
        return path.lstrip("/")

    def _info(self, key: str, st: os.stat_result, path: str) -> ObjectInfo:
        crc = _kept_crc(path, st)
        return ObjectInfo(
            key=key,
            size=st.st_size,
            etag=_etag(st),
            mtime=st.st_mtime_ns / 1e9,
            mtime_precision=KEPT_PRECISION,
            checksums={"crc32c": crc} if crc else {},
            meta=ObjectMeta(mode=st.st_mode & localfs.PERMISSION_BITS),
        )

    @staticmethod
    def _raise(exc: OSError, path: str, action: str) -> None:
        if isinstance(exc, FileNotFoundError | NotADirectoryError) and action == "read":
            raise NotFoundError(f"no such file: {path}") from None
        if isinstance(exc, PermissionError):
            # a file's or folder's mode: this object's, not the moment's
            raise AccessError(
                f"cannot {action} {path}: permission denied", retryable=False
            ) from None
        if exc.errno in (errno.EROFS,):
            raise AccessError(
                f"cannot {action} {path}: read-only file system", retryable=False
            ) from None
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise StoreError(f"cannot {action} {path}: no space left", retryable=True) from None
        if isinstance(exc, IsADirectoryError):
            raise StoreError(f"cannot {action} {path}: is a directory") from None
        if isinstance(exc, NotADirectoryError | FileExistsError):
            raise StoreError(f"cannot {action} {path}: a parent is not a directory") from None
        raise StoreError(f"cannot {action} {path}: {exc.strerror or exc}") from None

    # ------------------------------------------------------------ ObjectStore

    def region(self) -> str | None:
        return "local"

    def check_bucket(self) -> None:
        if not os.path.isdir("/"):
            raise NotFoundError("the filesystem root is not a directory")

    def is_dir(self, key: str) -> bool:
        """True when ``key`` names an existing directory (a copy into it keeps names)."""
        return bool(key) and os.path.isdir(self.path(key))

    def check_writable(self, key: str) -> None:
        """Raise AccessError unless files can be created at ``key`` (or under it).

        Walks up to the nearest existing ancestor: it must be a directory this
        process may write to. Nothing is created."""
        path = self.path(key).rstrip("/") or "/"
        probe = path if key.endswith("/") or os.path.isdir(path) else os.path.dirname(path)
        while probe != "/" and not os.path.lexists(probe):
            probe = os.path.dirname(probe)
        if not os.path.isdir(probe):
            raise AccessError(f"destination not writable: {probe} is not a directory")
        if not os.access(probe, os.W_OK | os.X_OK):
            raise AccessError(f"destination not writable: {probe} (permission denied)")

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        prefix = prefix.lstrip("/")
        base = prefix[: prefix.rfind("/") + 1]  # the deepest directory the prefix names
        yield from self._walk(base, prefix)

    def list_delimited(self, prefix: str) -> Iterator[ObjectInfo | str]:
        """Files directly under ``prefix``'s directory that start with it, and its
        subdirectories as ``key/`` strings, in key order."""
        prefix = prefix.lstrip("/")
        dir_key = prefix[: prefix.rfind("/") + 1]
        for key, is_dir in self._scan(dir_key, prefix):
            if is_dir:
                if key.startswith(prefix):
                    yield key
                continue
            info = self._stat_info(key)
            if info is not None:
                yield info

    def _scan(self, dir_key: str, prefix: str) -> builtins.list[tuple[str, bool]]:
        """One directory's files starting with ``prefix`` and the subdirectories
        (``key/``) that may hold such files, sorted in key order."""
        path = self.path(dir_key) if dir_key else "/"
        try:
            with os.scandir(path) as it:
                entries = [(e.name, e) for e in it if not e.name.startswith(HIDDEN_PREFIX)]
        except (FileNotFoundError, NotADirectoryError):
            return []
        except PermissionError:
            raise AccessError(f"cannot list {path}: permission denied") from None
        except OSError as exc:
            raise StoreError(f"cannot list {path}: {exc.strerror or exc}") from None
        keyed: list[tuple[bytes, str, bool]] = []
        for name, entry in entries:
            if not _is_utf8(name):
                # no object store takes such a key, and no manifest or report can
                # hold it: it is left alone on both sides (never copied, never deleted)
                log.warning(
                    "skipping %r in %s: the name is not valid UTF-8, as object keys must be",
                    os.fsencode(name),
                    path,
                )
                continue
            key = dir_key + name
            try:
                is_dir = entry.is_dir(follow_symlinks=False)
                is_file = not is_dir and entry.is_file()
            except OSError:
                continue
            if is_dir:
                sub = key + "/"
                if sub.startswith(prefix) or prefix.startswith(sub):
                    keyed.append((_sort_key(sub), sub, True))
            elif is_file and key.startswith(prefix):
                keyed.append((_sort_key(key), key, False))
        del entries
        keyed.sort()
        return [(key, is_dir) for _, key, is_dir in keyed]

    def _stat_info(self, key: str) -> ObjectInfo | None:
        path = self.path(key)
        try:
            st = os.stat(path)
        except FileNotFoundError:
            return None  # vanished while listing
        except PermissionError:
            # it fails alone (ObjectInfo.error); the listing goes on
            return ObjectInfo(key=key, size=0, error=f"cannot stat {path}: permission denied")
        return self._info(key, st, path) if stat.S_ISREG(st.st_mode) else None

    def _walk(self, dir_key: str, prefix: str, *, top: bool = True) -> Iterator[ObjectInfo]:
        try:
            entries = self._scan(dir_key, prefix)
        except AccessError as exc:
            if top:
                raise  # what was asked for cannot be listed at all
            # a folder below that cannot be listed fails alone; the listing goes on
            yield ObjectInfo(key=dir_key, size=0, error=str(exc))
            return
        for key, is_dir in entries:
            if is_dir:
                yield from self._walk(key, prefix, top=False)
                continue
            info = self._stat_info(key)
            if info is not None:
                yield info

    def head(self, key: str) -> ObjectInfo | None:
        path = self.path(key)
        try:
            st = os.stat(path)
        except (FileNotFoundError, NotADirectoryError):
            return None
        except OSError as exc:
            self._raise(exc, path, "stat")
            raise  # unreachable
        if not stat.S_ISREG(st.st_mode):
            return None
        return self._info(key.lstrip("/"), st, path)

    def _open_read(self, key: str, if_match: str | None) -> tuple[int, os.stat_result]:
        path = self.path(key)
        try:
            fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        except OSError as exc:
            self._raise(exc, path, "read")
            raise  # unreachable
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            os.close(fd)
            raise NotFoundError(f"not a regular file: {path}")
        if if_match is not None and _etag(st) != if_match:
            os.close(fd)
            raise PreconditionFailed(f"{path} changed since it was listed (etag {if_match})")
        return fd, st

    @staticmethod
    def _check_unchanged(fd: int, st: os.stat_result, path: str) -> None:
        now = os.fstat(fd)
        if _etag(now) != _etag(st):
            raise PreconditionFailed(f"{path} changed while it was read")

    @staticmethod
    def _pread(fd: int, length: int, offset: int, path: str) -> bytes:
        data = os.pread(fd, length, offset)
        if len(data) == length:
            return data
        parts = [data]
        got = len(data)
        while got < length:
            more = os.pread(fd, length - got, offset + got)
            if not more:
                raise StoreError(
                    f"short read from {path}: {got} of {length} bytes at offset {offset}"
                )
            parts.append(more)
            got += len(more)
        return b"".join(parts)

    def read_range(
        self, key: str, offset: int, length: int, *, if_match: str | None = None
    ) -> bytes:
        path = self.path(key)
        fd, st = self._open_read(key, if_match)
        try:
            if offset < 0 or length < 0 or offset + length > st.st_size:
                raise StoreError(f"range {offset}+{length} is outside {path} ({st.st_size} bytes)")
            data = self._pread(fd, length, offset, path)
            if if_match is not None:
                self._check_unchanged(fd, st, path)
            return data
        finally:
            os.close(fd)

    def iter_range(
        self, key: str, offset: int, length: int, block: int, *, if_match: str | None = None
    ) -> Iterator[bytes]:
        if block <= 0:
            raise UsageError("block size must be positive")
        path = self.path(key)
        fd, st = self._open_read(key, if_match)
        try:
            if offset < 0 or length < 0 or offset + length > st.st_size:
                raise StoreError(f"range {offset}+{length} is outside {path} ({st.st_size} bytes)")
            end = offset + length
            pos = offset
            while pos < end:
                n = min(block, end - pos)
                data = self._pread(fd, n, pos, path)
                if if_match is not None:
                    self._check_unchanged(fd, st, path)
                yield data
                pos += n
        finally:
            os.close(fd)

    def iter_range_into(
        self,
        key: str,
        offset: int,
        length: int,
        buffer: bytearray | mmap.mmap,
        *,
        if_match: str | None = None,
    ) -> Iterator[memoryview]:
        """Like :meth:`iter_range` with blocks of ``len(buffer)``, read into ``buffer``
        itself: each block is a view of it, valid until the next one is read.

        The gateway's source reads this way: a fresh multi-MiB ``bytes`` per block
        costs page faults (measured: as much CPU as sealing the block)."""
        path = self.path(key)
        fd, st = self._open_read(key, if_match)
        try:
            if offset < 0 or length < 0 or offset + length > st.st_size:
                raise StoreError(f"range {offset}+{length} is outside {path} ({st.st_size} bytes)")
            view = memoryview(buffer)
            end = offset + length
            pos = offset
            while pos < end:
                n = min(len(view), end - pos)
                got = 0
                while got < n:
                    k = os.preadv(fd, [view[got:n]], pos + got)
                    if k == 0:
                        raise StoreError(
                            f"short read from {path}: {got} of {n} bytes at offset {pos}"
                        )
                    got += k
                if if_match is not None:
                    self._check_unchanged(fd, st, path)
                yield view[:n]
                pos += n
        finally:
            os.close(fd)

    def _write_atomic(
        self,
        path: str,
        data: bytes | bytearray | memoryview,
        mode: int | None = None,
        mtime: float | None = None,
    ) -> os.stat_result:
        """Write ``path`` whole through a temporary file and a rename, without
        following a link below the root; ``mode`` and ``mtime`` are the source's."""

        def fill(fd: int) -> None:
            crc = crc32c_extend(0, memoryview(data).cast("B"))
            localfs.write_all(fd, data)
            _keep_mtime(fd, mtime)
            _keep_crc(fd, os.fstat(fd), f"{crc:08x}")

        try:
            dir_fd, name = self._parent_fd(path, create=True)
        except OSError as exc:
            self._raise(exc, os.path.dirname(path), "create directory")
            raise  # unreachable
        try:
            _sweep_stale(os.path.dirname(path), dir_fd)
            return localfs.write_file_at(
                dir_fd,
                name,
                _tmp_name(),
                fill,
                mode=localfs.final_mode(mode),
            )
        except OSError as exc:
            self._raise(exc, path, "write")
            raise  # unreachable
        finally:
            os.close(dir_fd)

    def put(
        self, key: str, data: bytes | bytearray | memoryview, *, meta: ObjectMeta | None = None
    ) -> ObjectInfo:
        key = key.lstrip("/")
        if not key or key.endswith("/"):
            raise UsageError(f"cannot write to {self.path(key)!r}: not a file name")
        path = self.path(key)
        self._write_atomic(
            path,
            data,
            meta.mode if meta is not None else None,
            meta.mtime if meta is not None else None,
        )
        info = self.head(key)
        if info is None:  # pragma: no cover - removed under our feet
            raise StoreError(f"{path} vanished right after it was written", retryable=True)
        return info

    def delete(self, key: str) -> None:
        path = self.path(key)
        try:
            dir_fd, name = self._parent_fd(path, create=False)
        except (FileNotFoundError, NotADirectoryError):
            return
        except OSError as exc:
            self._raise(exc, path, "delete")
            raise  # unreachable
        try:
            os.unlink(name, dir_fd=dir_fd)
        except (FileNotFoundError, NotADirectoryError):
            return
        except OSError as exc:
            self._raise(exc, path, "delete")
        finally:
            os.close(dir_fd)

    # ------------------------------------------------------------ MultipartWriter

    def _staging_name(self, key: str, upload_id: str) -> str:
        if not upload_id or not all(c in "0123456789abcdef" for c in upload_id):
            raise NotFoundError(f"no multipart upload {upload_id!r} for {self.path(key)}")
        return f"{_MPU_PREFIX}{upload_id}"

    def _open_child_dir(self, dir_fd: int, name: str, shown: str, *, create: bool) -> int:
        """``name`` in ``dir_fd`` as a directory, never through a link."""
        if create:
            try:
                os.mkdir(name, 0o700, dir_fd=dir_fd)
            except FileExistsError:
                pass
        try:
            return os.open(
                name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd
            )
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                localfs.check_final_name(dir_fd, name, shown, self.root)
            raise

    def _open_upload(self, key: str, upload_id: str) -> tuple[int, int, str]:
        """The parent directory, the staging directory (descriptors) and the staging
        name of an upload of ``key``; NotFoundError unless it is this key's upload."""
        path = self.path(key)
        staging = self._staging_name(key, upload_id)
        missing = NotFoundError(f"no multipart upload {upload_id} for {path}")
        try:
            parent_fd, _ = self._parent_fd(path, create=False)
        except (FileNotFoundError, NotADirectoryError):
            raise missing from None
        except OSError as exc:
            self._raise(exc, path, "write")
            raise  # unreachable
        try:
            staging_fd = self._open_child_dir(
                parent_fd, staging, os.path.join(os.path.dirname(path), staging), create=False
            )
        except (FileNotFoundError, NotADirectoryError):
            os.close(parent_fd)
            raise missing from None
        except BaseException:
            os.close(parent_fd)
            raise
        try:
            owner = _read_small(staging_fd, "key")
        except OSError:
            owner = None
        if owner != key.lstrip("/"):
            os.close(staging_fd)
            os.close(parent_fd)
            raise missing
        return parent_fd, staging_fd, staging

    def create_multipart(
        self, key: str, *, meta: ObjectMeta | None = None, crc32c: bool = False
    ) -> str:
        key = key.lstrip("/")
        if not key or key.endswith("/"):
            raise UsageError(f"cannot write to {self.path(key)!r}: not a file name")
        path = self.path(key)
        upload_id = uuid.uuid4().hex
        staging = self._staging_name(key, upload_id)
        try:
            parent_fd, _ = self._parent_fd(path, create=True)
        except OSError as exc:
            self._raise(exc, path, "write")
            raise  # unreachable
        try:
            os.mkdir(staging, 0o700, dir_fd=parent_fd)
            staging_fd = self._open_child_dir(parent_fd, staging, staging, create=False)
            try:
                _write_small(staging_fd, "key", key)
                if meta is not None and meta.mode is not None:
                    _write_small(staging_fd, "mode", f"{meta.mode & localfs.PERMISSION_BITS:o}")
                if meta is not None and meta.mtime is not None:
                    _write_small(staging_fd, "mtime", repr(meta.mtime))
            finally:
                os.close(staging_fd)
        except OSError as exc:
            self._raise(exc, path, "write")
        finally:
            os.close(parent_fd)
        return upload_id

    def upload_part(
        self,
        key: str,
        upload_id: str,
        part_number: int,
        data: bytes | bytearray | memoryview,
        *,
        crc32c: str | None = None,
    ) -> str:
        if not 1 <= part_number <= _MAX_PARTS:
            raise UsageError(f"part number {part_number} is outside 1..{_MAX_PARTS}")
        parent_fd, staging_fd, staging = self._open_upload(key, upload_id)
        tag = f"{len(memoryview(data)):x}-{uuid.uuid4().hex[:16]}"
        part_name = f"{part_number:05d}"
        shown = os.path.join(os.path.dirname(self.path(key)), staging, part_name)
        try:
            part_fd = self._open_child_dir(staging_fd, part_name, shown, create=True)
            try:
                _sweep_stale(shown, part_fd)

                def fill(fd: int) -> None:
                    crc = crc32c_extend(0, memoryview(data).cast("B"))
                    if crc32c is not None and crc32c.lower().rjust(8, "0") != f"{crc:08x}":
                        raise IntegrityError(
                            f"{shown}: part {part_number} has CRC32C {crc:08x}, "
                            f"the writer's is {crc32c}"
                        )
                    localfs.write_all(fd, data)
                    _keep_crc(fd, os.fstat(fd), f"{crc:08x}")  # combined at completion

                localfs.write_file_at(part_fd, tag, _tmp_name(), fill, mode=0o600)
                # A re-sent part replaces the earlier one: drop any other tag of this number.
                for name in os.listdir(part_fd):
                    if name != tag and not name.startswith(HIDDEN_PREFIX):
                        localfs.unlink_at(part_fd, name)
            finally:
                os.close(part_fd)
        except OSError as exc:
            self._raise(exc, self.path(key), "write")
        finally:
            os.close(staging_fd)
            os.close(parent_fd)
        return tag

    def complete_multipart(
        self,
        key: str,
        upload_id: str,
        parts: builtins.list[tuple[int, str]],
        *,
        part_crc32c: Mapping[int, str] | None = None,
        crc32c: str | None = None,
    ) -> ObjectInfo:
        key = key.lstrip("/")
        path = self.path(key)
        numbers = [n for n, _ in parts]
        parent_fd, staging_fd, staging = self._open_upload(key, upload_id)
        try:
            if not parts or numbers != sorted(set(numbers)):
                raise UsageError(f"parts of {path} must be given once each, in ascending order")
            files: list[int] = []
            try:
                for number, tag in parts:
                    fd = _open_part(staging_fd, number, tag)
                    if fd is None:
                        raise StoreError(
                            f"part {number} of {path} is missing or its tag does not match"
                        )
                    files.append(fd)
                mode_text = _read_small_or_none(staging_fd, "mode")
                carried = int(mode_text, 8) if mode_text else None
                mtime = _staged_mtime(staging_fd)
                _sweep_stale(os.path.dirname(path), parent_fd)

                def fill(out: int) -> None:
                    for part_fd in files:
                        _append_fd(out, part_fd)
                    _keep_mtime(out, mtime)
                    crc = _combined_crc(files)
                    if crc is not None:
                        _keep_crc(out, os.fstat(out), crc)

                localfs.write_file_at(
                    parent_fd,
                    os.path.basename(path),
                    _tmp_name(),
                    fill,
                    mode=localfs.final_mode(carried),
                )
            except OSError as exc:
                self._raise(exc, path, "write")
            finally:
                for fd in files:
                    os.close(fd)
            os.close(staging_fd)
            staging_fd = -1
            shutil.rmtree(staging, dir_fd=parent_fd, ignore_errors=True)
        finally:
            if staging_fd >= 0:
                os.close(staging_fd)
            os.close(parent_fd)
        info = self.head(key)
        if info is None:  # pragma: no cover
            raise StoreError(f"{path} vanished right after it was written", retryable=True)
        return info

    def abort_multipart(self, key: str, upload_id: str) -> None:
        try:
            parent_fd, staging_fd, staging = self._open_upload(key, upload_id)
        except NotFoundError:
            return
        os.close(staging_fd)
        try:
            shutil.rmtree(staging, dir_fd=parent_fd, ignore_errors=True)
        finally:
            os.close(parent_fd)


def _write_small(dir_fd: int, name: str, text: str) -> None:
    fd = os.open(
        name,
        os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
        0o600,
        dir_fd=dir_fd,
    )
    try:
        localfs.write_all(fd, text.encode("utf-8", errors="surrogateescape"))
    finally:
        os.close(fd)


def _read_small(dir_fd: int, name: str) -> str:
    fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
    try:
        with os.fdopen(os.dup(fd), "rb") as fh:
            return fh.read(1 << 20).decode("utf-8", errors="surrogateescape")
    finally:
        os.close(fd)


def _read_small_or_none(dir_fd: int, name: str) -> str | None:
    try:
        return _read_small(dir_fd, name)
    except FileNotFoundError:
        return None


def _open_part(staging_fd: int, number: int, tag: str) -> int | None:
    """The staged file of part ``number`` with ``tag`` (read-only), or None."""
    if not tag or "/" in tag or tag.startswith("."):
        return None
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        part_dir = os.open(f"{number:05d}", flags | os.O_DIRECTORY, dir_fd=staging_fd)
    except OSError:
        return None
    try:
        fd = os.open(tag, flags, dir_fd=part_dir)
    except OSError:
        return None
    finally:
        os.close(part_dir)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        return None
    return fd


def _append_fd(out_fd: int, src_fd: int) -> None:
    """Append the whole file open as ``src_fd`` to ``out_fd``, in the kernel where possible."""
    size = os.fstat(src_fd).st_size
    copied = 0
    try:
        while copied < size:
            n = os.copy_file_range(src_fd, out_fd, size - copied, copied)
            if n == 0:
                break
            copied += n
    except (AttributeError, OSError):
        pass
    while copied < size:
        data = os.pread(src_fd, min(8 * 1024 * 1024, size - copied), copied)
        if not data:
            raise StoreError("a staged part shrank while it was assembled")
        localfs.write_all(out_fd, data)
        copied += len(data)


def _keep_mtime(fd: int, mtime: float | None) -> None:
    """Give a file being written the source's modification time (atime too, as rclone)."""
    if mtime is not None:
        ns = to_ns(mtime)
        os.utime(fd, ns=(ns, ns))


_CRC_ATTR = "user.skyhop.crc32c"


def _keep_crc(fd: int, st: os.stat_result, crc: str) -> None:
    """Record ``crc`` with the file being written, for the size, mtime and inode it has."""
    value = f"{crc} {st.st_size:x} {st.st_mtime_ns:x} {st.st_ino:x}".encode()
    try:
        os.setxattr(fd, _CRC_ATTR, value)
    except OSError:
        pass  # no user attributes here: such files are checked by size


def _kept_crc(path: str | int, st: os.stat_result) -> str | None:
    """The CRC32C kept with the file when it was written, if the file is still as it was."""
    try:
        value = os.getxattr(path, _CRC_ATTR).decode("ascii")
    except (OSError, UnicodeDecodeError):
        return None
    crc, _, rest = value.partition(" ")
    if rest != f"{st.st_size:x} {st.st_mtime_ns:x} {st.st_ino:x}" or len(crc) != 8:
        return None
    return crc


def _combined_crc(files: list[int]) -> str | None:
    """The CRC32C of the concatenated part files (open descriptors), from the CRCs
    kept with each."""
    parts: list[tuple[str, int]] = []
    for part in files:
        try:
            st = os.fstat(part)
        except OSError:
            return None
        crc = _kept_crc(part, st)
        if crc is None:
            return None
        parts.append((crc, st.st_size))
    return combine_chunks(parts) if parts else None


def _staged_mtime(staging_fd: int) -> float | None:
    try:
        text = _read_small_or_none(staging_fd, "mtime")
        return float(text) if text else None
    except (OSError, ValueError):
        return None


def _is_utf8(name: str) -> bool:
    """Whether a file name decoded from the OS is valid UTF-8 (an undecodable byte
    comes back as a lone surrogate, which does not encode)."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
