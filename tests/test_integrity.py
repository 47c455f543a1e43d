import os

import pytest

from skyhop.integrity import combine_chunks, crc32c, crc32c_combine, crc_hex


def test_known_vector():
    # RFC 3720 test vector: 32 bytes of zeros
    assert crc32c(b"\x00" * 32) == 0x8A9136AA
    assert crc32c(b"123456789") == 0xE3069283


@pytest.mark.parametrize("sizes", [[1, 1], [5, 0], [1000, 7], [4096, 4096, 13], [0, 9]])
def test_combine_equals_whole(sizes):
    blobs = [os.urandom(n) for n in sizes]
    whole = crc32c(b"".join(blobs))
    assert combine_chunks([(crc_hex(crc32c(b)), len(b)) for b in blobs]) == crc_hex(whole)


def test_combine_pairwise():
    a, b = os.urandom(333), os.urandom(77777)
    assert crc32c_combine(crc32c(a), crc32c(b), len(b)) == crc32c(a + b)


def test_combine_over_long_parts():
    """Part lengths of real objects (tens of MiB): the x^(8n) shift is exact far past
    the small sizes above."""
    a = os.urandom(1000)
    for n in (8 * 1024 * 1024, 3 * (1 << 24) + 5):
        b = bytes(n - 7) + os.urandom(7)
        assert crc32c_combine(crc32c(a), crc32c(b), n) == crc32c(a + b)
