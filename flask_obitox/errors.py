"""The one error type every layer raises, and the codes a client can see.

Each error carries a stable ``code`` (what a program branches on), an HTTP ``status``,
a human ``message`` and optional ``details``. Views turn it into
``{"error": code, "message": message, "details": details}``.
"""

from __future__ import annotations

from typing import Any

#: Every code a client can receive, with its HTTP status.
STATUS_BY_CODE: dict[str, int] = {
    "INVALID_INPUT": 400,
    "INVALID_JSON": 400,
    "UNAUTHENTICATED": 401,
    "FORBIDDEN": 403,
    "NOT_FOUND": 404,
    "UPLOAD_NOT_FOUND": 404,
    "GROUP_NOT_FOUND": 404,
    "PROCESSING_NOT_FOUND": 404,
    "METHOD_NOT_ALLOWED": 405,
    "UPLOAD_ABORTED": 409,
    "UPLOAD_COMPLETED": 409,
    "UPLOAD_NOT_COMPLETE": 409,
    "GROUP_CLOSED": 409,
    "UPLOAD_CLOSED": 409,
    "PROCESSING_NOT_FAILED": 409,
    "UPLOAD_EXPIRED": 410,
    "FILE_TOO_LARGE": 413,
    "BATCH_TOO_LARGE": 413,
    "PAYLOAD_TOO_LARGE": 413,
    "UNSUPPORTED_MEDIA_TYPE": 415,
    "VALIDATION_FAILED": 422,
    "INVALID_PARTS": 422,
    "CONTENT_MISMATCH": 422,
    "RATE_LIMITED": 429,
    "INTERNAL_ERROR": 500,
    "STORAGE_UNAVAILABLE": 503,
    "STATE_UNAVAILABLE": 503,
}


class ObitoXError(Exception):
    """A failure with a code, a status and a sentence a client can act on."""

    def __init__(
        self,
        code: str,
        message: str,
        *,
        details: dict[str, Any] | None = None,
        status: int | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.details: dict[str, Any] = details or {}
        self.status = status if status is not None else STATUS_BY_CODE[code]

    def to_dict(self) -> dict[str, Any]:
        return {"error": self.code, "message": self.message, "details": self.details}

    def __repr__(self) -> str:
        return f"ObitoXError({self.code!r}, {self.message!r})"


class ServiceUnavailable(ObitoXError):
    """A backing service cannot be reached. ``detail`` (which names hosts and
    endpoints) is for the server's log only; clients get a generic sentence."""

    def __init__(self, code: str, message: str, detail: str) -> None:
        super().__init__(code, message)
        self.detail = detail


class StateUnavailable(ServiceUnavailable):
    """The state backend (Redis) cannot be reached."""

    def __init__(self, detail: str = "The upload state store is unavailable.") -> None:
        super().__init__(
            "STATE_UNAVAILABLE", "The upload state store is unavailable; retry shortly.", detail
        )


class StorageUnavailable(ServiceUnavailable):
    """Object storage (S3) cannot be reached or refuses our requests."""

    def __init__(self, detail: str = "Object storage is unavailable.") -> None:
        super().__init__(
            "STORAGE_UNAVAILABLE", "Object storage is unavailable; retry shortly.", detail
        )
