"""Parameters a store records at creation: the chunker's block sizes.

Blocks cut with other parameters would still be valid blocks, but they would not
de-duplicate against the blocks already stored, so a store refuses to be used
with parameters other than its own.
"""

from __future__ import annotations

from collections import namedtuple

from vtstore.errors import ConfigError

# The largest block a chunker may be configured to emit.
MAX_CHUNK = 16 * 1024 * 1024


# collections.namedtuple, not typing.NamedTuple: no `typing` import at start-up
class ChunkerParams(namedtuple("ChunkerParams", "min avg max", defaults=(2048, 8192, 65536))):
    """Minimum, average and maximum block size of the content-defined chunker
    (`min`, `avg`, `max`: ints)."""

    __slots__ = ()

    def validate(self) -> ChunkerParams:
        """Return self if the sizes are sane, else raise `ConfigError`."""
        if not 64 <= self.min <= self.avg <= self.max <= MAX_CHUNK:
            raise ConfigError(
                f"chunker sizes need 64 <= min <= avg <= max <= {MAX_CHUNK},"
                f" got min={self.min} avg={self.avg} max={self.max}"
            )
        if self.avg & (self.avg - 1) or self.avg < 256:
            raise ConfigError(
                f"the average block size must be a power of two >= 256, not {self.avg}"
            )
        return self

    def to_dict(self) -> dict[str, int]:
        return {"min": self.min, "avg": self.avg, "max": self.max}

    @classmethod
    def from_dict(cls, d: dict) -> ChunkerParams:
        try:
            return cls(int(d["min"]), int(d["avg"]), int(d["max"])).validate()
        except (KeyError, TypeError, ValueError) as e:
            raise ConfigError(f"bad chunker parameters {d!r}: {e}") from None

    @classmethod
    def coerce(cls, obj) -> ChunkerParams:
        """A `ChunkerParams` from itself, a `(min, avg, max)` tuple, a dict, or an
        object with `min_size`/`avg_size`/`max_size` (the chunking layer's)."""
        if isinstance(obj, cls):
            return obj
        if isinstance(obj, dict):
            if "min_size" in obj:
                obj = {"min": obj["min_size"], "avg": obj["avg_size"], "max": obj["max_size"]}
            return cls.from_dict(obj)
        if hasattr(obj, "min_size"):
            return cls(obj.min_size, obj.avg_size, obj.max_size).validate()
        try:
            mn, avg, mx = obj
        except (TypeError, ValueError):
            raise ConfigError(f"not chunker parameters: {obj!r}") from None
        return cls(int(mn), int(avg), int(mx)).validate()

    def __str__(self) -> str:
        return f"min={self.min} avg={self.avg} max={self.max}"


DEFAULT_CHUNKER = ChunkerParams()
