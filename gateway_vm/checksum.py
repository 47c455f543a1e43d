"""CRC32C over any buffer, without copying.

``google_crc32c``'s C extension accepts only ``bytes``; the destination holds
plaintext in a ``bytearray`` it decrypted into. So, when the extension's own
native library (``crc32c_extend`` of google/crc32c, SSE4.2) can be found, we
call it through ctypes on the buffer in place (ctypes releases the GIL);
otherwise we fall back to copying into ``bytes``.
"""

from __future__ import annotations

import ctypes
import glob
import os

import google_crc32c

_extend_native = None


def _load() -> None:
    global _extend_native
    base = os.path.dirname(os.path.dirname(google_crc32c.__file__))
    for path in sorted(glob.glob(os.path.join(base, "google_crc32c.libs", "libcrc32c*.so*"))):
        try:
            lib = ctypes.CDLL(path)
            fn = lib.crc32c_extend
        except (OSError, AttributeError):
            continue
        fn.argtypes = [ctypes.c_uint32, ctypes.c_void_p, ctypes.c_size_t]
        fn.restype = ctypes.c_uint32
        probe = bytearray(b"123456789")
        if fn(0, (ctypes.c_char * len(probe)).from_buffer(probe), len(probe)) == 0xE3069283:
            _extend_native = fn
            return


_load()


def crc32c_extend(crc: int, data: bytes | bytearray | memoryview) -> int:
    """``crc`` extended by ``data`` (CRC32C, Castagnoli)."""
    if isinstance(data, bytes):
        return google_crc32c.extend(crc, data)
    view = memoryview(data).cast("B")
    if not view:
        return crc
    if _extend_native is not None and not view.readonly:
        return _extend_native(crc, (ctypes.c_char * len(view)).from_buffer(view), len(view))
    return google_crc32c.extend(crc, bytes(view))


def native() -> bool:
    """True when buffers are checksummed in place."""
    return _extend_native is not None
