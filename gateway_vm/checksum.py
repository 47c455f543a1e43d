"""CRC32C over any buffer, without copying: :func:`skyhop.integrity.crc32c_extend`
(the gateway's roles and the local store share it)."""

from __future__ import annotations

from skyhop.integrity import crc32c_extend, native

__all__ = ["crc32c_extend", "native"]
