"""The fuzz harness shared by every decoder's fuzz test.

`fuzz(decode, seeds, n=..., expected=(FormatError,))` feeds `decode` `n` inputs
made by mutating `seeds` (valid encodings of the decoder's format: bit flips,
octet sets to boundary values, insertions, deletions, truncations, splices of
two seeds, repeated slices, varint-looking runs) and returns a `FuzzResult`.
Any exception other than the `expected` ones is a failure and is recorded with
the input that raised it; so is a decode that takes longer than `slow` seconds
(a quadratic path or a bomb), in CPU seconds of the decoding thread.  The test asserts `result.failures == []`.

The count: a test runs `n` inputs (default 100,000; a test whose inputs cost
more passes a smaller `n`).  `$VT_FUZZ_N` scales every test alike: each runs
`n * VT_FUZZ_N / 100,000` inputs, so the documented long run, VT_FUZZ_N=1000000,
runs ten times what CI runs.  `$VT_FUZZ_SEED` sets the random seed (default: a
fixed one, so CI is repeatable); `VT_FUZZ_SEED=random` draws a fresh one, which
every result's summary (and so every failure message) names.
"""

from __future__ import annotations

import os
import random
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import pytest

DEFAULT_N = 100_000
_INTERESTING = [0x00, 0x01, 0x7F, 0x80, 0x81, 0xFF, 0xFE, 0x20, 0x7B, 0x7D, 0x2C, 0x3A]


@dataclass
class FuzzResult:
    """What a fuzz run saw: inputs tried, expected errors, and failures."""

    tried: int = 0
    rejected: int = 0
    accepted: int = 0
    failures: list[tuple[bytes | str, str]] = field(default_factory=list)
    seed: int = 0

    def summary(self) -> str:
        return (
            f"{self.tried} inputs (seed {self.seed}): {self.accepted} decoded,"
            f" {self.rejected} rejected, {len(self.failures)} failures"
        )


def mutate(rng: random.Random, data: bytes, seeds: Sequence[bytes]) -> bytes:
    """One random mutation (or a short stack of them) of `data`."""
    b = bytearray(data)
    for _ in range(rng.choice((1, 1, 1, 2, 3))):
        op = rng.randrange(10)
        n = len(b)
        if op == 0 and n:  # flip a bit
            i = rng.randrange(n)
            b[i] ^= 1 << rng.randrange(8)
        elif op == 1 and n:  # set an octet to a boundary value
            b[rng.randrange(n)] = rng.choice(_INTERESTING)
        elif op == 2:  # insert random octets
            i = rng.randrange(n + 1)
            b[i:i] = rng.randbytes(rng.choice((1, 1, 2, 4, 8)))
        elif op == 3 and n:  # delete a slice
            i = rng.randrange(n)
            del b[i : i + rng.choice((1, 1, 2, 4, 16))]
        elif op == 4 and n:  # truncate
            del b[rng.randrange(n) :]
        elif op == 5 and seeds:  # splice with another seed
            other = rng.choice(seeds)
            i = rng.randrange(n + 1)
            j = rng.randrange(len(other) + 1)
            b = b[:i] + bytearray(other[j:])
        elif op == 6 and n:  # repeat a slice (nesting, long runs)
            i = rng.randrange(n)
            piece = b[i : i + rng.randrange(1, 16)]
            b[i:i] = piece * rng.choice((2, 3, 8, 64))
        elif op == 7 and n:  # a long varint-looking run (huge numbers)
            i = rng.randrange(n + 1)
            b[i:i] = bytes([0xFF] * rng.choice((4, 9, 10, 16, 40))) + b"\x7f"
        elif op == 8 and n:  # a random octet
            b[rng.randrange(n)] = rng.randrange(256)
        elif op == 9 and n:  # swap two slices
            i, j = sorted((rng.randrange(n), rng.randrange(n)))
            b = b[:i] + b[j:] + b[i:j]
    return bytes(b)


def mutate_text(rng: random.Random, text: str, seeds: Sequence[str]) -> str:
    """A mutation of a text seed: octet mutations decoded back leniently, plus
    text-shaped ones (long digit runs, deep bracket nesting)."""
    r = rng.randrange(8)
    if r == 0:  # a number too long for int() or for any span
        i = rng.randrange(len(text) + 1)
        return text[:i] + "9" * rng.choice((20, 400, 5000)) + text[i:]
    if r == 1 and "{" in text:  # nest the value inside itself
        i = text.index("{")
        head = text[: i + 1]
        return head * rng.choice((50, 2000)) + text[i + 1 :]
    raw = mutate(rng, text.encode(), [s.encode() for s in seeds])
    return raw.decode("utf-8", "replace")


def run_fuzz(
    decode: Callable,
    seeds: Sequence,
    n: int | None = None,
    expected: tuple[type[BaseException], ...] = (),
    slow: float = 1.0,
    rng_seed: int | None = None,
) -> FuzzResult:
    """Feed `decode` `n` mutations of `seeds` (all bytes or all str); collect failures."""
    from vtstore.errors import FormatError

    expected = expected or (FormatError,)
    n = n or DEFAULT_N
    if os.environ.get("VT_FUZZ_N"):
        n = max(1, n * int(os.environ["VT_FUZZ_N"]) // DEFAULT_N)
    if rng_seed is None:
        seed_text = os.environ.get("VT_FUZZ_SEED", "20261207")
        rng_seed = random.randrange(2**32) if seed_text == "random" else int(seed_text)
    rng = random.Random(rng_seed)
    res = FuzzResult(seed=rng_seed)
    text = isinstance(seeds[0], str)
    seeds = list(seeds)
    for _ in range(n):
        base = rng.choice(seeds)
        data = mutate_text(rng, base, seeds) if text else mutate(rng, base, seeds)
        res.tried += 1
        t0 = time.thread_time()  # CPU time: a busy machine must not fail a test
        try:
            decode(data)
        except expected:
            res.rejected += 1
        except Exception as e:  # noqa: BLE001 - any other exception is the finding
            if len(res.failures) < 20:
                tb = traceback.format_exception_only(type(e), e)[-1].strip()
                res.failures.append((data[:300], tb))
            else:
                res.failures.append((b"", type(e).__name__))
        else:
            res.accepted += 1
        dt = time.thread_time() - t0
        if dt > slow:
            res.failures.append((data[:300], f"took {dt:.2f} s"))
    return res


@pytest.fixture
def fuzz():
    """The fuzz runner: `fuzz(decode, seeds, n=None, expected=(FormatError,))`."""
    return run_fuzz
