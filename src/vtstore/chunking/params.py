"""Chunker parameters: the numbers a store records at creation.

They are part of the store's format: the same data cut with other parameters
gives other blocks, so a store refuses data chunked with parameters it was not
created with (that check belongs to the store; this module only validates).
"""

from __future__ import annotations

from dataclasses import dataclass

from vtstore.chunking import _cdc

__all__ = ["ChunkParams", "DEFAULT_PARAMS"]


@dataclass(frozen=True, slots=True)
class ChunkParams:
    """min/avg/max chunk sizes and the forced-boundary minimum, validated.

    `avg_size` is a power of two from 256 to 2**30; `64 <= min_size <= avg_size
    <= max_size <= 2**30`; a forced (format) boundary closer than
    `max(min_size, forced_min)` to the previous cut is dropped, so no format cut
    makes a block below the minimum (small records are merged: docs/CHUNKING.md §2).
    """

    min_size: int = _cdc.DEFAULT_MIN
    avg_size: int = _cdc.DEFAULT_AVG
    max_size: int = _cdc.DEFAULT_MAX
    forced_min: int = _cdc.DEFAULT_FORCED_MIN

    def __post_init__(self):
        for name in ("min_size", "avg_size", "max_size", "forced_min"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool):
                raise TypeError(f"{name} must be an int, got {v!r}")
        # the C constructor holds the one copy of the validation rules
        _cdc.Chunker(self.min_size, self.avg_size, self.max_size, self.forced_min)

    def chunker(self) -> _cdc.Chunker:
        """A new streaming `Chunker` with these parameters."""
        return _cdc.Chunker(self.min_size, self.avg_size, self.max_size, self.forced_min)

    def as_dict(self) -> dict:
        """The parameters as a plain dict (for store metadata and JSON)."""
        return {
            "min_size": self.min_size,
            "avg_size": self.avg_size,
            "max_size": self.max_size,
            "forced_min": self.forced_min,
        }

    @classmethod
    def from_dict(cls, d: dict) -> ChunkParams:
        """The inverse of `as_dict`; missing keys take the defaults."""
        return cls(
            **{k: d[k] for k in ("min_size", "avg_size", "max_size", "forced_min") if k in d}
        )


DEFAULT_PARAMS = ChunkParams()
