"""Errors that refuse a whole input; the CLI maps them to exit code 2."""

from __future__ import annotations


class InputError(Exception):
    """The input as a whole cannot be taken: a clear message, no traceback, nothing registered."""


class SourceError(InputError):
    """The source cannot be read: missing, empty, truncated, not UTF-8, unreachable."""


class ContractError(InputError):
    """The source does not have the shape of the contract (a required column is absent)."""


class SourceUnavailable(SourceError):
    """The source could not be reached (a database down, a network share gone): worth a retry."""
