"""CRC32C helpers: chunk checksums and combining them into a whole-object checksum.

Chunks are verified independently; the object's CRC32C is derived from the
chunk CRCs with the zlib ``crc32_combine`` construction (GF(2) matrix powers),
so nothing is read twice.
"""

from __future__ import annotations

import google_crc32c

_POLY = 0x82F63B78  # CRC-32C (Castagnoli), reflected


def crc32c(data: bytes | memoryview) -> int:
    """The CRC32C of ``data`` (hardware-accelerated where available)."""
    return google_crc32c.value(bytes(data) if isinstance(data, memoryview) else data)


def crc_hex(value: int) -> str:
    """Canonical text form: 8 lower-case hex digits."""
    return f"{value:08x}"


def _gf2_times(mat: list[int], vec: int) -> int:
    out = 0
    i = 0
    while vec:
        if vec & 1:
            out ^= mat[i]
        vec >>= 1
        i += 1
    return out


def _gf2_square(mat: list[int]) -> list[int]:
    return [_gf2_times(mat, mat[n]) for n in range(32)]


def crc32c_combine(crc1: int, crc2: int, len2: int) -> int:
    """CRC32C of A+B given crc(A), crc(B) and len(B)."""
    if len2 <= 0:
        return crc1
    odd = [_POLY] + [1 << n for n in range(31)]
    even = _gf2_square(odd)
    odd = _gf2_square(even)
    while True:
        even = _gf2_square(odd)
        if len2 & 1:
            crc1 = _gf2_times(even, crc1)
        len2 >>= 1
        if not len2:
            break
        odd = _gf2_square(even)
        if len2 & 1:
            crc1 = _gf2_times(odd, crc1)
        len2 >>= 1
        if not len2:
            break
    return crc1 ^ crc2


def combine_chunks(parts: list[tuple[str, int]]) -> str:
    """Whole-object CRC32C (hex) from ``(crc_hex, length)`` of its chunks, in order."""
    total = 0
    for index, (value, length) in enumerate(parts):
        crc = int(value, 16)
        total = crc if index == 0 else crc32c_combine(total, crc, length)
    return crc_hex(total)
