"""User-facing errors.

Anything raised as `MetalmError` is bad input (config, data, paths, incompatible options) or a run
that cannot go on for a reason the message names (divergence, damaged checkpoints, a full disk): the
CLI prints its message on one line and exits with status 2, without a traceback.
"""


class MetalmError(Exception):
    """Bad input that the user can fix; the message names the problem."""


class ConfigError(MetalmError):
    """Invalid configuration key, type, value or combination."""


class DataError(MetalmError):
    """Missing, empty, undecodable or too-small data."""


class DivergedError(MetalmError):
    """Training produced a non-finite loss, gradient norm or weights (`train.on_nonfinite`)."""


class CheckpointError(MetalmError):
    """A checkpoint is damaged (a checksum or size differs, a file is missing or unreadable)."""


class StorageError(MetalmError):
    """The run directory's file system is full (or over quota)."""
