"""The one exception the client raises, carrying the server's code when there is one.

A program branches on :attr:`ObitoXClientError.code`: the server's own codes
(``FILE_TOO_LARGE``, ``UPLOAD_NOT_FOUND``, ``CONTENT_MISMATCH``...) pass through
unchanged, and failures that never reached the ObitoX server get codes of their own
(:data:`CLIENT_CODES`). :class:`StaleResumeFile`, a subclass, says that a resume file
names an upload that can no longer be continued.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import requests

#: Codes the client itself gives, for failures the ObitoX server did not answer.
CLIENT_CODES: dict[str, str] = {
    "CONNECTION_ERROR": "the ObitoX server or storage could not be reached",
    "BAD_RESPONSE": "an answer that is not the JSON the contract describes",
    "STORAGE_ERROR": "storage refused a PUT of the file's bytes",
    "FILE_NOT_FOUND": "the local file does not exist or is not a regular file",
    "FILE_CHANGED": "the local file changed since its upload began",
    "CANCELLED": "the upload was stopped (Ctrl-C, or another part failed)",
}

_XML_FIELD = re.compile(r"<(Code|Message)>([^<]{0,500})</\1>")


class ObitoXClientError(Exception):
    """An upload step failed.

    :param code: the server's error code (``"FILE_TOO_LARGE"``...) or one of
        :data:`CLIENT_CODES`.
    :param status: the HTTP status of the answer, ``None`` when there was none.
    """

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
        self.status = status

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"

    def __repr__(self) -> str:
        return f"ObitoXClientError({self.code!r}, {self.message!r}, status={self.status!r})"

    @classmethod
    def from_api_response(cls, response: requests.Response) -> ObitoXClientError:
        """The server's ``{error, message, details}``; a readable stand-in for anything else
        (a proxy's HTML error page, a host app's own 404)."""
        try:
            body = response.json()
        except ValueError:
            body = None
        if (
            isinstance(body, dict)
            and isinstance(body.get("error"), str)
            and isinstance(body.get("message"), str)
        ):
            details = body.get("details")
            return cls(
                body["error"],
                body["message"],
                details=details if isinstance(details, dict) else {},
                status=response.status_code,
            )
        return cls(
            "BAD_RESPONSE",
            f"{response.request.method} {response.url} answered {response.status_code} "
            f"without an ObitoX error body: {_snippet(response.text)}",
            status=response.status_code,
        )

    @classmethod
    def from_storage_response(
        cls, response: requests.Response, **details: Any
    ) -> ObitoXClientError:
        """A refused PUT: S3's XML ``<Code>``/``<Message>``, when it sent them."""
        fields = dict(_XML_FIELD.findall(response.text))
        storage_code = fields.get("Code")
        reason = fields.get("Message") or _snippet(response.text) or response.reason
        return cls(
            "STORAGE_ERROR",
            f"storage answered {response.status_code}"
            + (f" {storage_code}" if storage_code else "")
            + f": {reason}",
            details={**details, "storageCode": storage_code},
            status=response.status_code,
        )


class StaleResumeFile(ObitoXClientError):
    """The upload a resume file names can no longer be continued.

    The server does not know it (``UPLOAD_NOT_FOUND``: it was begun with other
    credentials, or its record expired), it expired (``UPLOAD_EXPIRED``) or it was
    aborted (``UPLOAD_ABORTED``); :attr:`code` and :attr:`status` are the server's.
    The resume file is left in place: continuing is impossible, and starting the file
    over is the caller's decision (``resumable_upload(..., restart=True)``).

    :param reason: why the upload cannot be continued, a sentence.
    :param cleanup: what becomes of the parts it left in storage, a sentence.
    """

    def __init__(
        self,
        cause: ObitoXClientError,
        *,
        path: Path,
        resume_file: Path,
        upload_id: str,
        reason: str,
        cleanup: str,
    ) -> None:
        super().__init__(
            cause.code,
            f"cannot resume {path} (resume file {resume_file}): {reason}; {cleanup}",
            details={
                **cause.details,
                "uploadId": upload_id,
                "path": str(path),
                "resumeFile": str(resume_file),
            },
            status=cause.status,
        )
        self.path = path
        self.resume_file = resume_file
        self.upload_id = upload_id
        self.reason = reason
        self.cleanup = cleanup

    def __repr__(self) -> str:
        return f"StaleResumeFile({self.code!r}, {self.message!r}, status={self.status!r})"


def _snippet(text: str, limit: int = 200) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit] + "..."
