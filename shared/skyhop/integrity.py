"""CRC32C helpers: chunk checksums and combining them into a whole-object checksum.

Chunks are verified independently; the object's CRC32C is derived from the
chunk CRCs with zlib's ``crc32_combine`` construction (a multiplication by
x^(8n) modulo the polynomial), so nothing is read twice.

:func:`crc32c_extend` checksums any buffer without copying it:
``google_crc32c``'s C extension accepts only ``bytes``, and gateways and the
local store hold data in ``bytearray``/``mmap`` buffers. When the extension's
own native library (``crc32c_extend`` of google/crc32c, SSE4.2) can be found,
it is called through ctypes on the buffer in place (ctypes releases the GIL);
otherwise the buffer is copied into ``bytes``.
"""

from __future__ import annotations

import ctypes
import glob
import os

import google_crc32c

_POLY = 0x82F63B78  # CRC-32C (Castagnoli), reflected


def crc32c(data: bytes | memoryview) -> int:
    """The CRC32C of ``data`` (hardware-accelerated where available)."""
    return int(google_crc32c.value(bytes(data) if isinstance(data, memoryview) else data))


def crc_hex(value: int) -> str:
    """Canonical text form: 8 lower-case hex digits."""
    return f"{value:08x}"


def _multmodp(a: int, b: int) -> int:
    """a * b modulo the CRC-32C polynomial (reflected bit order)."""
    m = 1 << 31
    p = 0
    while True:
        if a & m:
            p ^= b
            if not a & (m - 1):
                return p
        m >>= 1
        b = (b >> 1) ^ _POLY if b & 1 else b >> 1


#: x^(2^n) modulo the polynomial, n = 0..63 (x^1 is ``1 << 30`` reflected)
_X2N = [1 << 30]
for _ in range(63):
    _X2N.append(_multmodp(_X2N[-1], _X2N[-1]))


def _x8nmodp(n: int) -> int:
    """x^(8n) modulo the polynomial: the shift of a CRC past ``n`` zero bytes."""
    xp = 1 << 31  # x^0
    k = 3
    while n:
        if n & 1:
            xp = _multmodp(_X2N[k & 63], xp)
        n >>= 1
        k += 1
    return xp


def crc32c_combine(crc1: int, crc2: int, len2: int) -> int:
    """CRC32C of A+B given crc(A), crc(B) and len(B) (zlib 1.2.12's
    ``crc32_combine``: one multiplication by x^(8 len2), not a matrix power)."""
    if len2 <= 0:
        return crc1
    return _multmodp(_x8nmodp(len2), crc1) ^ crc2


def combine_chunks(parts: list[tuple[str, int]]) -> str:
    """Whole-object CRC32C (hex) from ``(crc_hex, length)`` of its chunks, in order."""
    total = 0
    for index, (value, length) in enumerate(parts):
        crc = int(value, 16)
        total = crc if index == 0 else crc32c_combine(total, crc, length)
    return crc_hex(total)


# ---------------------------------------------------------------- any buffer

_UNSET = object()
_extend_native: object = _UNSET


def _load() -> object:
    """The native ``crc32c_extend`` (found once, on first use), or None."""
    global _extend_native
    if _extend_native is not _UNSET:
        return _extend_native
    _extend_native = None
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
            break
    return _extend_native


def crc32c_extend(crc: int, data: bytes | bytearray | memoryview) -> int:
    """``crc`` extended by ``data`` (CRC32C, Castagnoli)."""
    if isinstance(data, bytes):
        return int(google_crc32c.extend(crc, data))
    view = memoryview(data).cast("B")
    if not view:
        return crc
    fn = _load()
    if callable(fn) and not view.readonly:
        return int(fn(crc, (ctypes.c_char * len(view)).from_buffer(view), len(view)))
    return int(google_crc32c.extend(crc, bytes(view)))


def native() -> bool:
    """True when buffers are checksummed in place."""
    return _load() is not None
