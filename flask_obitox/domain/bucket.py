"""The bucket behind the uploads: creation, CORS for browsers, the lifecycle rule.

What ``flask obitox bucket|cors|lifecycle`` and the admin routes run, on the app's
default storage (``OBITOX_BUCKET``), with the app's configured origins and TTL.
"""

from __future__ import annotations

from collections.abc import Iterable

from ..storage import Storage
from ..storage.bucket import BucketCreation, create_bucket
from ..storage.cors import CorsReport, CorsSetup, choose_origins, setup_cors, verify_cors
from ..storage.lifecycle import LifecycleSetup, setup_lifecycle
from .base import DomainBase


class Bucket(DomainBase):
    """Operations on the app's default bucket."""

    def bucket_storage(self) -> Storage:
        return self.storages.get(self.default_storage)

    def create_bucket(self) -> BucketCreation:
        return create_bucket(self.bucket_storage())

    def check_cors_origins(self, origins: Iterable[str] | None) -> None:
        """Raise for a missing or bad origin, before anything is changed."""
        choose_origins(origins, self.settings.cors_origins)

    def setup_cors(self, origins: Iterable[str] | None, *, dry_run: bool = False) -> CorsSetup:
        """Merge the upload rule for ``origins`` (default: ``OBITOX_CORS_ORIGINS``)."""
        return setup_cors(
            self.bucket_storage(), origins, configured=self.settings.cors_origins, dry_run=dry_run
        )

    def verify_cors(self, origins: Iterable[str] | None) -> CorsReport:
        return verify_cors(self.bucket_storage(), origins, configured=self.settings.cors_origins)

    def setup_lifecycle(self, *, dry_run: bool = False) -> LifecycleSetup:
        """The rule that aborts multipart uploads older than ``OBITOX_UPLOAD_TTL``."""
        settings = self.settings
        return setup_lifecycle(
            self.bucket_storage(), settings.key_prefix, settings.upload_ttl, dry_run=dry_run
        )
