"""Bit-set helpers: a set of node indices is a Python ``int`` with bit ``i`` set."""

from __future__ import annotations

from collections.abc import Iterator


def iter_bits(mask: int) -> Iterator[int]:
    """Yield the indices of the set bits of ``mask`` in increasing order.

    >>> list(iter_bits(0b10110))
    [1, 2, 4]
    """
    if mask.bit_length() > 256 and mask.bit_count() > 48:
        # dense masks: scanning the binary string beats repeated big-int ops
        s = bin(mask)[:1:-1]
        i = s.find("1")
        while i >= 0:
            yield i
            i = s.find("1", i + 1)
        return
    while mask:
        low = mask & -mask
        yield low.bit_length() - 1
        mask ^= low


def bits_desc(mask: int) -> Iterator[int]:
    """Yield the indices of the set bits of ``mask`` in decreasing order.

    >>> list(bits_desc(0b10110))
    [4, 2, 1]
    """
    while mask:
        i = mask.bit_length() - 1
        yield i
        mask ^= 1 << i


def popcount(mask: int) -> int:
    """Number of set bits.

    >>> popcount(0b1011)
    3
    """
    return mask.bit_count()
