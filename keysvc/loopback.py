"""Whether a host is this machine's own loopback: the one rule behind every "http only on
loopback" and "insecure only on loopback" check (the issuer, [otf].url, the backends'
endpoints, `keysvc setup --jwks`).

A host is loopback when it is
- the name `localhost` (RFC 6761 §6.3: it resolves to the loopback address), or
- an IP address in 127.0.0.0/8 or ::1, the IPv4 ones also in their IPv4-mapped IPv6 form.

Why the whole of 127.0.0.0/8 and not 127.0.0.1 alone: RFC 1122 §3.2.1.3 reserves every
127.x.y.z address for "internal host loopback" that "MUST NOT appear outside a host", and Linux
routes the whole block to `lo`. A packet to 127.0.0.2 never leaves the machine, so refusing it
only gets in the way of tests and sidecars that bind other loopback addresses, while nothing a
remote party controls can be reached through it. `::ffff:127.0.0.1` is the same address seen
through an IPv6 socket (Python 3.11's `is_loopback` says no to it; 3.13 says yes). Names other
than `localhost` (including `*.localhost`) are not trusted: what they resolve to is up to the
resolver.
"""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit


def is_loopback_host(host: str | None) -> bool:
    """Whether `host` (a name or an IP literal, without brackets or port) is loopback."""
    if not host:
        return False
    if host.lower() == "localhost":
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_loopback


def is_loopback_url(url: str) -> bool:
    """Whether a URL (`http://127.0.0.1:8200`) or authority (`//[::1]:443`) names a loopback
    host."""
    try:
        return is_loopback_host(urlsplit(url).hostname)
    except ValueError:  # a bracketed host that is no IPv6 address
        return False
