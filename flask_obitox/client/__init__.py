"""A Python client for ObitoX servers, and the ``obitox upload`` command.

.. code-block:: python

    from flask_obitox.client import ObitoXClient

    with ObitoXClient("https://example.com/obitox",
                      auth_headers={"Authorization": "Bearer ..."}) as client:
        client.upload_file("photo.png")
        client.resumable_upload("video.mp4", resume_file="video.mp4.obitox-resume")
        for upload in client.list_uploads(status="completed"):
            print(upload["uploadId"], upload["filename"])
"""

from .api import (
    MultipartStatus,
    ObitoXClient,
    Progress,
    RetryPolicy,
    UploadedPart,
    UploadOutcome,
    UploadOutcomes,
    UploadResult,
)
from .errors import ObitoXClientError, StaleResumeFile
from .events import EventStream, ObitoXEvent
from .resume import RESUME_SUFFIX, resume_path_for

__all__ = [
    "RESUME_SUFFIX",
    "EventStream",
    "MultipartStatus",
    "ObitoXClient",
    "ObitoXClientError",
    "ObitoXEvent",
    "Progress",
    "RetryPolicy",
    "StaleResumeFile",
    "UploadOutcome",
    "UploadOutcomes",
    "UploadResult",
    "UploadedPart",
    "resume_path_for",
]
