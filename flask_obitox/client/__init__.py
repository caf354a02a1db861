"""A Python client for ObitoX servers, and the ``obitox upload`` command.

.. code-block:: python

    from flask_obitox.client import ObitoXClient

    with ObitoXClient("https://example.com/obitox",
                      auth_headers={"Authorization": "Bearer ..."}) as client:
        client.upload_file("photo.png")
        client.resumable_upload("video.mp4", resume_file="video.mp4.obitox-resume")
"""

from .api import (
    MultipartStatus,
    ObitoXClient,
    Progress,
    RetryPolicy,
    UploadedPart,
    UploadOutcome,
    UploadResult,
)
from .errors import ObitoXClientError, StaleResumeFile
from .resume import RESUME_SUFFIX, resume_path_for

__all__ = [
    "RESUME_SUFFIX",
    "MultipartStatus",
    "ObitoXClient",
    "ObitoXClientError",
    "Progress",
    "RetryPolicy",
    "StaleResumeFile",
    "UploadOutcome",
    "UploadResult",
    "UploadedPart",
    "resume_path_for",
]
