"""User-facing errors.

Anything raised as `MetalmError` is bad input (config, data, paths, incompatible options): the CLI
prints its message on one line and exits with status 2, without a traceback.
"""


class MetalmError(Exception):
    """Bad input that the user can fix; the message names the problem."""


class ConfigError(MetalmError):
    """Invalid configuration key, type, value or combination."""


class DataError(MetalmError):
    """Missing, empty, undecodable or too-small data."""
