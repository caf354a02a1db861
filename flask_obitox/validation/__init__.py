"""Upload rules, file names and content sniffing: pure functions, no Flask.

Three jobs, in the order an upload meets them:

1. **Before signing** -- :meth:`RuleSet.check` applies the size, type and extension rules to
   what the client *declares*. The server's :class:`Rules` come from ``OBITOX_*`` settings; a
   request's ``validation`` object can only tighten them (:meth:`Rules.tighten`).
2. **Naming** -- :func:`sanitize_filename` turns a client's file name into one safe path segment.
3. **After the upload** -- :func:`verify_content` compares the first :data:`HEAD_BYTES` of the
   stored object (identified by :func:`sniff`) with the declared type.

Everything here is cheap to call per file: :meth:`RuleSet.check` runs once per file of a batch,
so its patterns are compiled once (at :meth:`Rules.tighten`), not per call.
"""

from __future__ import annotations

from .content import HEAD_BYTES, sniff, verify_content
from .names import (
    DANGEROUS_CONTENT_TYPES,
    DANGEROUS_EXTENSIONS,
    extension_of,
    is_dangerous_filename,
    sanitize_filename,
)
from .rules import (
    ExtensionRule,
    Rules,
    RuleSet,
    TypeRule,
    content_type_allowed,
    normalize_content_type,
)

__all__ = [
    "DANGEROUS_CONTENT_TYPES",
    "DANGEROUS_EXTENSIONS",
    "HEAD_BYTES",
    "ExtensionRule",
    "RuleSet",
    "Rules",
    "TypeRule",
    "content_type_allowed",
    "extension_of",
    "is_dangerous_filename",
    "normalize_content_type",
    "sanitize_filename",
    "sniff",
    "verify_content",
]
