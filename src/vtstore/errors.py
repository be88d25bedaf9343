"""The one error hierarchy of vtstore.

Every error a user can provoke with bad input is a `VTError`; the CLI turns it into
one line on stderr and an exit code.  Anything else escaping is a bug.
"""


class VTError(Exception):
    """Root of every vtstore error."""

    exit_code = 1


class FormatError(VTError, ValueError):
    """Bytes or text that do not decode as the format they claim to be."""


class ConfigError(VTError):
    """A bad configuration file, clause, key or store specification."""

    exit_code = 2


class StoreError(VTError):
    """A store could not do what was asked (closed, read-only, mismatched, unreachable)."""


class ReadOnlyError(StoreError):
    """A write was attempted on a read-only store."""


class HashClassMismatchError(StoreError):
    """A hashcode or store of one hash class was used where another is required."""


class MissingBlockError(VTError, KeyError):
    """A block is not in the store.  It is a `KeyError` so stores act as mappings."""

    def __init__(self, hashcode, store_name: str | None = None):
        self.hashcode = hashcode
        self.store_name = store_name
        super().__init__(hashcode)

    def __str__(self) -> str:
        where = f" in store {self.store_name}" if self.store_name else ""
        return f"missing block {self.hashcode}{where}"


class CorruptBlockError(VTError):
    """Stored data whose hash does not match its hashcode, or that does not decode."""

    def __init__(self, hashcode, detail: str = "data does not match its hash"):
        self.hashcode = hashcode
        self.detail = detail
        super().__init__(f"corrupt block {hashcode}: {detail}")


class NotAvailableError(VTError):
    """A feature that is planned but not available yet."""

    exit_code = 2


class UsageError(VTError):
    """The command line asks for something that cannot be: a bad argument's value,
    an unknown topic, options that do not go together (exit 2, like argparse)."""

    exit_code = 2
