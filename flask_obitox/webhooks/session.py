"""The HTTP session webhook deliveries are sent with (SSRF-safe, requests-hardened).

Imported only where deliveries run (the worker), so a web process never loads the
HTTP client.
"""

from __future__ import annotations

import requests
from requests_hardened import Config, HTTPSession

from ..config import Settings

USER_AGENT = "flask-obitox-webhooks"


def new_session(settings: Settings) -> requests.Session:
    """A session that never follows redirects, times out, and (unless
    ``OBITOX_WEBHOOK_ALLOW_PRIVATE``) connects only to public addresses, checked by
    requests-hardened on the address it connects to. Environment proxies and
    ``.netrc`` are ignored: a proxy would make the address check meaningless."""
    timeout = float(settings.webhook_timeout)
    session: requests.Session = HTTPSession(
        Config(
            ip_filter_enable=not settings.webhook_allow_private,
            ip_filter_allow_loopback_ips=False,
            never_redirect=True,
            default_timeout=(timeout, timeout),
            user_agent_override=USER_AGENT,
        )
    )
    session.trust_env = False
    return session
