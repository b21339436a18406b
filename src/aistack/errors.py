"""Exceptions, one class per kind of failure, all under `AIStackError`."""

from __future__ import annotations


class AIStackError(Exception):
    """Base of every error AI Stack raises on purpose (the CLI turns it into exit 2)."""


class ConfigError(AIStackError):
    """A setting or argument is invalid: the message names the field and the reason."""


class DeclarationError(AIStackError):
    """A use-case declaration (view, contract, gate) is malformed."""


class UseCaseNotFoundError(AIStackError):
    """No registered use case has the requested name."""


class TableNotFoundError(AIStackError):
    """A Delta table that a stage reads does not exist yet."""


class ContractError(AIStackError):
    """A stage's output breaks an invariant (row accounting); nothing is written."""


class SchemaError(AIStackError):
    """A frame does not have the columns or types a stage expects."""


class NotFittedError(AIStackError):
    """A model was used before `fit`."""


class StoreUnavailableError(AIStackError):
    """The online store did not answer."""


class RegistryError(AIStackError):
    """A registry operation cannot be carried out (no such version or alias)."""


class LogUnavailableError(StoreUnavailableError):
    """The prediction log cannot take a record (e.g. its disk is full)."""


class CorruptTableError(AIStackError):
    """A Delta table's log cannot be read."""


class CrashLoopError(AIStackError):
    """Serving workers kept dying: restarted too often, so the server stopped."""
