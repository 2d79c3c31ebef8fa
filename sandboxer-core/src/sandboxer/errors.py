"""The one error hierarchy of sandboxer.

Every failure a user can see is a `SandboxerError` subclass. Each class carries
a stable machine `code`, the CLI exit status and the HTTP status it maps to,
so the CLI and the HTTP API translate errors in exactly one place each.
Messages name the thing that went wrong and, where there is one, the fix.
"""

from __future__ import annotations

from typing import Any, ClassVar


class SandboxerError(Exception):
    """Base of every error sandboxer reports to a user."""

    code: ClassVar[str] = "error"
    exit_code: ClassVar[int] = 1
    http_status: ClassVar[int] = 500

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details = details

    def to_dict(self) -> dict[str, Any]:
        """The JSON error body used by the HTTP API and `--json` output."""
        body: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.details:
            body["details"] = self.details
        return body


class InvalidInputError(SandboxerError):
    """A value given by the user is malformed or out of range."""

    code = "invalid_input"
    exit_code = 2
    http_status = 422


class NotFoundError(SandboxerError):
    """A sandbox, snapshot, profile, extension or host does not exist."""

    code = "not_found"
    exit_code = 3
    http_status = 404


class ConflictError(SandboxerError):
    """The request clashes with the current state (a taken name, a busy record)."""

    code = "conflict"
    exit_code = 4
    http_status = 409


class UnsupportedError(SandboxerError):
    """The owning extension cannot do what was asked (no snapshots, no files)."""

    code = "unsupported"
    exit_code = 5
    http_status = 400


class BackendError(SandboxerError):
    """The backend failed or could not be reached while doing the work."""

    code = "backend_failure"
    exit_code = 6
    http_status = 503


class ExtensionUnavailableError(SandboxerError):
    """The extension that owns a record is not installed or failed to load."""

    code = "extension_unavailable"
    exit_code = 7
    http_status = 503


class StoreError(SandboxerError):
    """A record store file cannot be read or written safely."""

    code = "store_unavailable"
    exit_code = 8
    http_status = 503


class ConfigError(SandboxerError):
    """The user's configuration file or a profile definition is invalid."""

    code = "invalid_config"
    exit_code = 9
    http_status = 422


class AuthenticationError(SandboxerError):
    """A request to the HTTP API lacks a valid bearer token."""

    code = "unauthorized"
    exit_code = 10
    http_status = 401


class ForbiddenError(SandboxerError):
    """The request may not be served here at all (e.g. a foreign Host name)."""

    code = "forbidden"
    exit_code = 11
    http_status = 403


class UnsafeArchiveError(InvalidInputError):
    """An archive member would land outside its root or is of a refused kind."""

    code = "unsafe_archive"


ERROR_CLASSES: tuple[type[SandboxerError], ...] = (
    SandboxerError,
    InvalidInputError,
    NotFoundError,
    ConflictError,
    UnsupportedError,
    BackendError,
    ExtensionUnavailableError,
    StoreError,
    ConfigError,
    AuthenticationError,
    ForbiddenError,
    UnsafeArchiveError,
)
