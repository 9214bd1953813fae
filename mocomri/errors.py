"""Errors about the user's input. The CLI prints these as one line, without a traceback."""

from __future__ import annotations


class MocomriError(Exception):
    """Base class for errors caused by input (a file, a config key, a manifest row)."""


class ConfigError(MocomriError, ValueError):
    """A config file or override names an unknown key or holds a value of the wrong type."""


class DataError(MocomriError, ValueError):
    """A scan, image or manifest row cannot be used; the message names the file or row."""


class LeakageError(MocomriError, ValueError):
    """A test item shares a subject or a content hash with a training item."""
