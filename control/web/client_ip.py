"""The client's address: the TCP peer, unless that peer is a trusted proxy.

`X-Forwarded-For` is read right to left and only while each hop is a configured trusted
proxy (METRUX_TRUSTED_PROXIES); the first address not in that set is the client. From any
other peer the header is ignored, so a client cannot choose the address it is limited,
blocked and audited under. Pure function.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def _address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        address = ipaddress.ip_address(text.strip().strip("[]"))
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def is_within(text: str, networks: Sequence[Network]) -> bool:
    address = _address(text)
    return address is not None and any(address in network for network in networks)


def resolve_client_ip(
    peer: str | None, forwarded_for: Sequence[str], trusted: Sequence[Network]
) -> str | None:
    """`peer` is the TCP peer; `forwarded_for` every X-Forwarded-For header value, in
    order."""
    if peer is None or not is_within(peer, trusted):
        return _canonical(peer)
    hops = [hop.strip() for value in forwarded_for for hop in value.split(",") if hop.strip()]
    client = peer
    for hop in reversed(hops):
        if _address(hop) is None:
            break  # garbage from the client side: stop at the last hop we can trust
        client = hop
        if not is_within(hop, trusted):
            break
    return _canonical(client)


def _canonical(text: str | None) -> str | None:
    if text is None:
        return None
    address = _address(text)
    return str(address) if address is not None else text
