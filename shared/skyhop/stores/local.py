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
``<st_mtime_ns hex>-<size hex>``.
"""

from __future__ import annotations

import errno
import logging
import os
import shutil
import socket
import stat
import threading
import uuid
from collections.abc import Iterator

from skyhop.errors import AccessError, NotFoundError, PreconditionFailed, StoreError, UsageError
from skyhop.stores.base import BaseStore, Capabilities, ObjectInfo, ObjectMeta
from skyhop.uri import StoreURI

HIDDEN_PREFIX = ".skyhop-"

log = logging.getLogger("skyhop.stores.local")
_MPU_PREFIX = HIDDEN_PREFIX + "mpu-"
_TMP_PREFIX = HIDDEN_PREFIX + "tmp-"
_MAX_PARTS = 10_000
_HOST = socket.gethostname().replace("-", "_") or "host"
_SWEPT: set[str] = set()
_SWEPT_LOCK = threading.Lock()


def _tmp_path(directory: str) -> str:
    """A fresh temporary name in ``directory`` that records host and writer pid."""
    return os.path.join(directory, f"{_TMP_PREFIX}{_HOST}-{os.getpid()}-{uuid.uuid4().hex}")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _sweep_stale(directory: str) -> None:
    """Remove this host's temporary files in ``directory`` whose writer is gone
    (once per directory per process; a live writer's file is never touched)."""
    with _SWEPT_LOCK:
        if directory in _SWEPT:
            return
        _SWEPT.add(directory)
    mine = f"{_TMP_PREFIX}{_HOST}-"
    try:
        with os.scandir(directory) as entries:
            names = [e.name for e in entries if e.name.startswith(mine)]
    except OSError:
        return
    for name in names:
        pid_text = name[len(mine) :].partition("-")[0]
        if pid_text.isdigit() and not _pid_alive(int(pid_text)):
            _unlink(os.path.join(directory, name))


def _etag(st: os.stat_result) -> str:
    return f"{st.st_mtime_ns:x}-{st.st_size:x}"


def _sort_key(name: str) -> bytes:
    return os.fsencode(name)


class LocalStore(BaseStore):
    """Files under ``/`` addressed by their path without the leading slash."""

    capabilities = Capabilities(
        multipart=True, server_side_copy=False, conditional_read=True, min_part_size=1
    )
    #: put / upload_part take any bytes-like object (bytes, bytearray, memoryview)
    #: and keep no reference to it after returning.
    accepts_buffers = True

    def __init__(self, uri: StoreURI) -> None:
        if uri.scheme != "local":
            raise UsageError(f"LocalStore cannot open {uri}")
        self.uri = uri.with_key("")

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

    def _info(self, key: str, st: os.stat_result) -> ObjectInfo:
        return ObjectInfo(key=key, size=st.st_size, etag=_etag(st), mtime=st.st_mtime_ns / 1e9)

    @staticmethod
    def _raise(exc: OSError, path: str, action: str) -> None:
        if isinstance(exc, FileNotFoundError | NotADirectoryError) and action == "read":
            raise NotFoundError(f"no such file: {path}") from None
        if isinstance(exc, PermissionError):
            raise AccessError(f"cannot {action} {path}: permission denied") from None
        if exc.errno in (errno.EROFS,):
            raise AccessError(f"cannot {action} {path}: read-only file system") from None
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

    def _scan(self, dir_key: str, prefix: str) -> list[tuple[str, bool]]:
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
        try:
            st = os.stat(self.path(key))
        except FileNotFoundError:
            return None  # vanished while listing
        except PermissionError:
            raise AccessError(f"cannot stat {self.path(key)}: permission denied") from None
        return self._info(key, st) if stat.S_ISREG(st.st_mode) else None

    def _walk(self, dir_key: str, prefix: str) -> Iterator[ObjectInfo]:
        for key, is_dir in self._scan(dir_key, prefix):
            if is_dir:
                yield from self._walk(key, prefix)
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
        return self._info(key.lstrip("/"), st)

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
        if now.st_mtime_ns != st.st_mtime_ns or now.st_size != st.st_size:
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
        buffer: bytearray,
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

    def _write_atomic(self, path: str, data: bytes | bytearray | memoryview) -> os.stat_result:
        directory = os.path.dirname(path)
        try:
            os.makedirs(directory, exist_ok=True)
        except OSError as exc:
            self._raise(exc, directory, "create directory")
        _sweep_stale(directory)
        tmp = _tmp_path(directory)
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            self._raise(exc, path, "write")
            raise  # unreachable
        try:
            try:
                view = memoryview(data).cast("B")
                while view:
                    n = os.write(fd, view)
                    view = view[n:]
                st = os.fstat(fd)
            finally:
                os.close(fd)
            os.replace(tmp, path)
        except OSError as exc:
            _unlink(tmp)
            self._raise(exc, path, "write")
        except BaseException:
            _unlink(tmp)
            raise
        return st

    def put(
        self, key: str, data: bytes | bytearray | memoryview, *, meta: ObjectMeta | None = None
    ) -> ObjectInfo:
        key = key.lstrip("/")
        if not key or key.endswith("/"):
            raise UsageError(f"cannot write to {self.path(key)!r}: not a file name")
        path = self.path(key)
        self._write_atomic(path, data)
        info = self.head(key)
        if info is None:  # pragma: no cover - removed under our feet
            raise StoreError(f"{path} vanished right after it was written", retryable=True)
        return info

    def delete(self, key: str) -> None:
        path = self.path(key)
        try:
            os.unlink(path)
        except (FileNotFoundError, NotADirectoryError):
            return
        except OSError as exc:
            self._raise(exc, path, "delete")

    # ------------------------------------------------------------ MultipartWriter

    def _staging(self, key: str, upload_id: str) -> str:
        if not upload_id or not all(c in "0123456789abcdef" for c in upload_id):
            raise NotFoundError(f"no multipart upload {upload_id!r} for {self.path(key)}")
        path = self.path(key)
        return os.path.join(os.path.dirname(path), f"{_MPU_PREFIX}{upload_id}")

    def create_multipart(self, key: str, *, meta: ObjectMeta | None = None) -> str:
        key = key.lstrip("/")
        if not key or key.endswith("/"):
            raise UsageError(f"cannot write to {self.path(key)!r}: not a file name")
        upload_id = uuid.uuid4().hex
        staging = self._staging(key, upload_id)
        try:
            os.makedirs(staging, mode=0o700)
        except OSError as exc:
            self._raise(exc, self.path(key), "write")
        with open(
            os.path.join(staging, "key"), "w", encoding="utf-8", errors="surrogateescape"
        ) as fh:
            fh.write(key)
        return upload_id

    def _check_upload(self, key: str, upload_id: str) -> str:
        staging = self._staging(key, upload_id)
        try:
            with open(
                os.path.join(staging, "key"), encoding="utf-8", errors="surrogateescape"
            ) as fh:
                owner = fh.read()
        except OSError:
            raise NotFoundError(f"no multipart upload {upload_id} for {self.path(key)}") from None
        if owner != key.lstrip("/"):
            raise NotFoundError(f"no multipart upload {upload_id} for {self.path(key)}")
        return staging

    def upload_part(
        self, key: str, upload_id: str, part_number: int, data: bytes | bytearray | memoryview
    ) -> str:
        if not 1 <= part_number <= _MAX_PARTS:
            raise UsageError(f"part number {part_number} is outside 1..{_MAX_PARTS}")
        staging = self._check_upload(key, upload_id)
        tag = f"{len(memoryview(data)):x}-{uuid.uuid4().hex[:16]}"
        part_dir = os.path.join(staging, f"{part_number:05d}")
        self._write_atomic(os.path.join(part_dir, tag), data)
        # A re-sent part replaces the earlier one: drop any other tag of this number.
        for name in os.listdir(part_dir):
            if name != tag and not name.startswith(HIDDEN_PREFIX):
                _unlink(os.path.join(part_dir, name))
        return tag

    def complete_multipart(
        self, key: str, upload_id: str, parts: list[tuple[int, str]]
    ) -> ObjectInfo:
        key = key.lstrip("/")
        staging = self._check_upload(key, upload_id)
        path = self.path(key)
        numbers = [n for n, _ in parts]
        if not parts or numbers != sorted(set(numbers)):
            raise UsageError(f"parts of {path} must be given once each, in ascending order")
        files = []
        for number, tag in parts:
            part = os.path.join(staging, f"{number:05d}", tag)
            if not os.path.isfile(part):
                raise StoreError(f"part {number} of {path} is missing or its tag does not match")
            files.append(part)
        _sweep_stale(os.path.dirname(path))
        tmp = _tmp_path(os.path.dirname(path))
        try:
            out = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
            try:
                for part in files:
                    _append_file(out, part)
            finally:
                os.close(out)
            os.replace(tmp, path)
        except OSError as exc:
            _unlink(tmp)
            self._raise(exc, path, "write")
        except BaseException:
            _unlink(tmp)
            raise
        shutil.rmtree(staging, ignore_errors=True)
        info = self.head(key)
        if info is None:  # pragma: no cover
            raise StoreError(f"{path} vanished right after it was written", retryable=True)
        return info

    def abort_multipart(self, key: str, upload_id: str) -> None:
        try:
            staging = self._staging(key, upload_id)
        except NotFoundError:
            return
        shutil.rmtree(staging, ignore_errors=True)


def _append_file(out_fd: int, path: str) -> None:
    """Append the file at ``path`` to ``out_fd`` in the kernel where possible."""
    with open(path, "rb") as src:
        size = os.fstat(src.fileno()).st_size
        copied = 0
        try:
            while copied < size:
                n = os.copy_file_range(src.fileno(), out_fd, size - copied)
                if n == 0:
                    break
                copied += n
        except (AttributeError, OSError):
            pass
        if copied < size:
            src.seek(copied)
            with os.fdopen(os.dup(out_fd), "wb") as dst:
                shutil.copyfileobj(src, dst, 8 * 1024 * 1024)


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def _is_utf8(name: str) -> bool:
    """Whether a file name decoded from the OS is valid UTF-8 (an undecodable byte
    comes back as a lone surrogate, which does not encode)."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
