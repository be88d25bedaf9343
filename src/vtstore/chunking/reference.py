"""The chunking algorithm in plain Python: the executable specification.

Used only by the tests, to check that the C chunker (`_cdc`) makes exactly the
same cuts; it is ~1000x slower.  docs/CHUNKING.md states the same algorithm in
prose.  Nothing here is shared with the C code: the gear table is regenerated
from its seed and the cut rule is written straight from the definition.
"""

from __future__ import annotations

from collections.abc import Iterable

GEAR_SEED = 0x7674737467656172  # ASCII "vtstgear"
WINDOW = 64
M64 = (1 << 64) - 1

HASH, FORMAT, MAX, END = "hash", "format", "max", "end"


def splitmix64(seed: int):
    """The splitmix64 generator: yields 64-bit values from `seed`."""
    x = seed
    while True:
        x = (x + 0x9E3779B97F4A7C15) & M64
        z = x
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M64
        yield z ^ (z >> 31)


def gear_table(seed: int = GEAR_SEED) -> tuple[int, ...]:
    """The 256 gear values: the first 256 outputs of splitmix64(seed)."""
    gen = splitmix64(seed)
    return tuple(next(gen) for _ in range(256))


GEAR = gear_table()


def validate(min_size: int, avg_size: int, max_size: int, forced_min: int) -> None:
    """Raise ValueError unless the parameters are allowed (same rules as the C code)."""
    if not (256 <= avg_size <= 1 << 30) or avg_size & (avg_size - 1):
        raise ValueError(f"avg_size must be a power of two from 256 to 2**30, got {avg_size}")
    if not (WINDOW <= min_size <= avg_size):
        raise ValueError(f"min_size must be from {WINDOW} to avg_size, got {min_size}")
    if not (avg_size <= max_size <= 1 << 30):
        raise ValueError(f"max_size must be from avg_size to 2**30, got {max_size}")
    if not (1 <= forced_min <= max_size):
        raise ValueError(f"forced_min must be from 1 to max_size, got {forced_min}")


def masks(avg_size: int) -> tuple[int, int]:
    """(small-chunk mask, large-chunk mask): the top log2(avg)+2 and log2(avg)-2 bits."""
    bits = avg_size.bit_length() - 1
    return (M64 << (64 - bits - 2)) & M64, (M64 << (64 - bits + 2)) & M64


def window_hash(data, q: int) -> int:
    """The gear hash of the (up to) 64 bytes ending at byte `q`, from the definition."""
    h = 0
    for k in range(WINDOW):
        if q - k < 0:
            break
        h += GEAR[data[q - k]] << k
    return h & M64


def cuts_with_kinds(
    data,
    min_size: int = 2048,
    avg_size: int = 8192,
    max_size: int = 65536,
    boundaries: Iterable[int] = (),
    forced_min: int = 64,
) -> list[tuple[int, str]]:
    """The chunk ends of `data` as one whole stream, each with why it was cut."""
    validate(min_size, avg_size, max_size, forced_min)
    mask_s, mask_l = masks(avg_size)
    props = list(boundaries)
    if any(b < 0 for b in props) or any(b >= c for b, c in zip(props, props[1:], strict=False)):
        raise ValueError("boundary offsets must be non-negative and strictly increasing")
    n = len(data)
    out: list[tuple[int, str]] = []
    s = 0
    pi = 0
    while s < n:
        while pi < len(props) and props[pi] < s + forced_min:
            pi += 1
        limit = s + max_size
        if pi < len(props) and props[pi] <= limit:
            cut_at, kind = props[pi], FORMAT
        else:
            cut_at, kind = limit, MAX
        found = None
        # roll the hash from 64 bytes before the first candidate; after 64 bytes
        # it equals window_hash (the tests check that too)
        h = 0
        for q in range(s + min_size - WINDOW, min(cut_at - 1, n)):
            h = ((h << 1) + GEAR[data[q]]) & M64
            e = q + 1
            if e - s < min_size:
                continue
            if h & (mask_s if e - s < avg_size else mask_l) == 0:
                found = e
                break
        if found is not None:
            out.append((found, HASH))
            s = found
        elif cut_at <= n:
            out.append((cut_at, kind))
            if kind == FORMAT:
                pi += 1
            s = cut_at
        else:
            out.append((n, END))
            s = n
    return out


def cut_offsets(data, *args, **kwargs) -> list[int]:
    """The chunk end offsets of `data` (as `_cdc.cut_offsets`)."""
    return [e for e, _ in cuts_with_kinds(data, *args, **kwargs)]
