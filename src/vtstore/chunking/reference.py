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
#: a format boundary between min and avg ends a block with probability 2**-FORMAT_BITS
FORMAT_BITS = 4

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
    mask_f = (M64 << (64 - FORMAT_BITS)) & M64
    fmin = max(min_size, forced_min)
    props = list(boundaries)
    if any(b < 0 for b in props) or any(b >= c for b, c in zip(props, props[1:], strict=False)):
        raise ValueError("boundary offsets must be non-negative and strictly increasing")
    n = len(data)
    out: list[tuple[int, str]] = []
    s = 0
    pi = 0
    while s < n:
        # roll the hash from 64 bytes before the first candidate; after 64 bytes
        # it equals window_hash (the tests check that too)
        h = 0
        q = s + min_size - WINDOW  # the next byte to hash
        hcut = None  # the first hash cut found
        while True:  # the candidates for this chunk's end, in order
            # no format cut makes a block below the minimum
            while pi < len(props) and props[pi] < s + fmin:
                pi += 1
            limit = s + max_size
            f = props[pi] if pi < len(props) and props[pi] <= limit else None
            # a boundary between min and avg that ends a record shorter than
            # the minimum (its predecessor less than fmin before it) is taken
            # only if strong
            gap = f - (props[pi - 1] if pi else 0) if f is not None else 0
            judged = f is not None and f - s < avg_size and gap < fmin
            if hcut is None:
                # search up to the boundary, or past a judged one to its window's end
                bound = limit if f is None else min(f + WINDOW, limit) if judged else f
                while q < min(bound - 1, n):
                    h = ((h << 1) + GEAR[data[q]]) & M64
                    e = q + 1
                    q += 1
                    if e - s < min_size:
                        continue
                    if h & (mask_s if e - s < avg_size else mask_l) == 0:
                        hcut = e
                        break
            if f is not None and (hcut is None or f < hcut):
                if f > n or (judged and f + 2 * fmin > n):  # the end (too near to judge)
                    out.append((n, END))
                    s = n
                    break
                if judged and not _takes(data, props, pi, fmin, mask_f):
                    pi += 1  # merged into the block
                    continue
                out.append((f, FORMAT))
                pi += 1
                s = f
            elif hcut is not None:
                out.append((hcut, HASH))
                s = hcut
            elif limit > n:
                out.append((n, END))
                s = n
            else:
                out.append((limit, MAX))
                s = limit
            break
    return out


def _takes(data, props, i: int, fmin: int, mask_f: int) -> bool:
    """Whether boundary props[i], less than fmin after the one before it and
    between min and avg from the last cut, ends the block."""
    f = props[i]

    def next_gap(j):
        return props[j + 1] - props[j] if j + 1 < len(props) else fmin

    if next_gap(i) >= fmin:  # it starts a record that can be a block of its own
        return True
    if window_hash(data, f + WINDOW - 1) & mask_f:  # weak
        return False
    # a boundary that starts such a record within fmin after it is the better cut
    return not any(next_gap(j) >= fmin for j in range(i + 1, len(props)) if props[j] < f + fmin)


def cut_offsets(data, *args, **kwargs) -> list[int]:
    """The chunk end offsets of `data` (as `_cdc.cut_offsets`)."""
    return [e for e, _ in cuts_with_kinds(data, *args, **kwargs)]
