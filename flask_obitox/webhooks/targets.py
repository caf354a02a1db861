"""Where a webhook may be delivered: the SSRF rules.

Endpoints come from the host's configuration, never from a client, but a URL in
configuration can still point inside the network (a typo, a DNS record that changed,
an endpoint that redirects to a metadata service). So, unless
``OBITOX_WEBHOOK_ALLOW_PRIVATE`` is on:

- the host must be in ``OBITOX_WEBHOOK_ALLOWED_HOSTS`` when that list is set;
- the address the host resolves to must be public. The check that counts is done by
  requests-hardened at connection time, on the very address the socket connects to
  (so a DNS answer that changes between a check and the connection cannot slip
  through); :func:`check_target` applies the same rules ahead of time, for
  ``flask obitox doctor`` and for clear messages;
- redirects are never followed (a 3xx is a failed attempt).
"""

from __future__ import annotations

import ipaddress
import socket

from requests_hardened.ip_filter import EXTRA_BLOCKED_NET_RANGES

from ..config import ConfigVars, Settings, display_url, parse_webhook_url, webhook_host_allowed

__all__ = [
    "WebhookTargetRefused",
    "check_target",
    "check_url",
    "display_url",
    "is_forbidden_address",
]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class WebhookTargetRefused(Exception):
    """A webhook URL that deliveries may not go to; the message says why."""


def is_forbidden_address(ip: IPAddress) -> bool:
    """Whether ``ip`` is private, loopback, link-local, shared (CGNAT), multicast,
    reserved or unspecified: requests-hardened's rules, plus ``is_reserved``."""
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return (
        ip.is_private
        or ip.is_multicast
        or ip.is_reserved
        or ip.is_unspecified
        or ip.is_loopback
        or ip.is_link_local
        or any(ip in network for network in EXTRA_BLOCKED_NET_RANGES)
    )


def check_url(url: str, settings: Settings) -> tuple[str, int]:
    """The host and port of ``url`` if its scheme and host are allowed (no DNS here).

    The URL is read as the HTTP client reads it, and refused where Python's own parser
    reads it otherwise (:func:`~flask_obitox.config.parse_webhook_url`), so the host
    checked here is the host a delivery connects to.
    """
    try:
        target = parse_webhook_url(url)
    except ValueError as error:
        raise WebhookTargetRefused(f"The URL {display_url(url)!r} {error}.") from None
    host = target.host
    if not webhook_host_allowed(host, settings.webhook_allowed_hosts):
        raise WebhookTargetRefused(
            f"The host {host!r} of {display_url(url)} is not in {ConfigVars.WEBHOOK_ALLOWED_HOSTS} "
            f"({', '.join(settings.webhook_allowed_hosts)})."
        )
    return host, target.port


def check_target(url: str, settings: Settings) -> list[str]:
    """Resolve the host of ``url`` and return the addresses deliveries may connect to.

    Raises :class:`WebhookTargetRefused` with a sentence when the URL is not allowed:
    wrong scheme, host not in ``OBITOX_WEBHOOK_ALLOWED_HOSTS``, a host that does not
    resolve, or (unless ``OBITOX_WEBHOOK_ALLOW_PRIVATE``) any resolved address that is
    not public: a host that answers with one private address among public ones is
    refused whole, since the connection could land on either.
    """
    host, port = check_url(url, settings)
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as error:
        raise WebhookTargetRefused(
            f"The host {host!r} of {url} does not resolve: {error}."
        ) from None
    addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
    if not settings.webhook_allow_private:
        forbidden = [a for a in addresses if is_forbidden_address(ipaddress.ip_address(a))]
        if forbidden:
            raise WebhookTargetRefused(
                f"The host {host!r} of {display_url(url)} resolves to {', '.join(forbidden)}, a private, "
                f"loopback, link-local, shared or reserved address; set "
                f"{ConfigVars.WEBHOOK_ALLOW_PRIVATE} = True to deliver there."
            )
    return addresses
