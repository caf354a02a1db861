"""An upload after its upload: listing, deletion and download (DESIGN §11).

A deleted upload keeps its record (status ``deleted``) until the record expires, so
its owner still sees it in the status route and listings.
"""

from __future__ import annotations

import time
from urllib.parse import quote

from ..errors import ObitoXError
from ..state.capabilities import InvalidCursor, OwnerIndex, supports
from .common import isoformat, not_complete
from .groups import Grouping, invalid_cursor
from .render import effective_status, render_upload
from .results import DownloadLink, UploadPage, UploadView

#: RFC 5987 ``attr-char`` beyond letters, digits and ``_.-~`` (which ``quote`` keeps).
_ATTR_CHARS = "!#$&+^`|"


def content_disposition(filename: str, *, inline: bool = False) -> str:
    """``Content-Disposition`` for a download of ``filename`` (RFC 6266): a quoted
    ASCII fallback (``"`` and ``\\`` and anything outside printable ASCII become
    ``_``) and, when that is not the name itself, ``filename*`` in UTF-8 (RFC 5987)."""
    kind = "inline" if inline else "attachment"
    fallback = "".join(c if " " <= c <= "~" and c not in '"\\' else "_" for c in filename)
    value = f'{kind}; filename="{fallback or "download"}"'
    if fallback != filename:
        value += "; filename*=UTF-8''" + quote(filename, safe=_ATTR_CHARS)
    return value


class Removal(Grouping):
    """``GET /uploads``, ``DELETE /uploads/<id>`` and ``GET /uploads/<id>/download``."""

    def list_uploads(
        self,
        owner: str,
        *,
        status: str | None = None,
        kind: str | None = None,
        group_id: str | None = None,
        profile: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> UploadPage:
        """``GET /uploads``: the caller's uploads, newest first, filtered."""
        state = self.state
        if not supports(state, OwnerIndex):
            raise ObitoXError(
                "NOT_FOUND", "This app's state backend cannot list uploads.", details={}
            )
        try:
            page = state.list_uploads(
                owner,
                status=status,
                kind=kind,
                group_id=group_id,
                profile=profile,
                limit=limit,
                cursor=cursor,
            )
        except InvalidCursor:
            raise invalid_cursor() from None
        now = time.time()
        return {
            "uploads": [render_upload(record, now=now) for record in page.items],
            "nextCursor": page.next_cursor,
        }

    def delete_upload(self, owner: str, upload_id: str) -> UploadView:
        """``DELETE /uploads/<id>``: status ``deleted`` (one caller wins and sends
        ``upload-deleted``); an open upload is aborted in storage, a completed one's
        object and derived objects deleted. Idempotent."""
        record = self.owned(owner, upload_id)
        deleted = self.discard(record)
        if record.status != "deleted":
            self.member_settled(deleted)
        return render_upload(deleted)

    def download_link(
        self, owner: str, upload_id: str, *, inline: bool = False, derived: str | None = None
    ) -> DownloadLink:
        """``GET /uploads/<id>/download``: a presigned GET of a completed upload, for
        ``OBITOX_DOWNLOAD_EXPIRY`` seconds, answered by storage with the upload's
        sanitised file name as an attachment (``inline``: to show in the browser).
        ``derived``: the key of an object a processor saved for it instead (a
        thumbnail), named by the last segment of its key."""
        record = self.owned(owner, upload_id)
        key, filename = record.key, record.filename
        if derived is not None:
            if derived not in (record.derived or []):
                raise ObitoXError(
                    "NOT_FOUND",
                    f"Upload {upload_id!r} has no derived object {derived!r}.",
                    details={"uploadId": upload_id, "derived": derived},
                )
            key, filename = derived, derived.rsplit("/", 1)[-1]
        status = effective_status(record)
        if status != "completed":
            raise not_complete(
                upload_id, f"Only a completed upload can be downloaded; this one is {status}.",
                status=status,
            )  # fmt: skip
        expires_in = self.settings.download_expiry
        now = time.time()
        url = self.storage_for(owner, record.bucket).presign_download(
            key,
            content_disposition=content_disposition(filename, inline=inline),
            expires_in=expires_in,
        )
        return {"url": url, "expiresAt": isoformat(now + expires_in)}
