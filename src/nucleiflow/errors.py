"""Errors that reach the user as one readable line.

Every message names the file, key or value at fault and, where there is a
finite set, the valid choices.
"""


class NucleiflowError(Exception):
    """Base class: a problem with the user's data or configuration."""


class ConfigError(NucleiflowError, ValueError):
    """A configuration value is invalid."""


class DataFormatError(NucleiflowError, ValueError):
    """An input file does not have the expected on-disk format."""


class ChecksumError(NucleiflowError):
    """A downloaded or provided file does not match its expected SHA-256."""


def choices_error(key: str, value, valid) -> ConfigError:
    """ConfigError for `value` at `key` not being one of `valid`."""
    valid = sorted(valid)
    return ConfigError(f"{key}: {value!r} is not valid; choose one of: {', '.join(map(str, valid))}")


def require_columns(frame, columns, what: str) -> None:
    """DataFormatError naming the first missing columns of table `frame` (`what` names the table), if any."""
    missing = [column for column in columns if column not in frame.columns]
    if missing:
        raise DataFormatError(f"{what} lacks column(s) {missing}; have {list(frame.columns)}")
