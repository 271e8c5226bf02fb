"""The real client address of a request that may have come through trusted proxies.
Plain functions (no Django import): the caller passes the request's META and the
setting."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from functools import lru_cache

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@lru_cache(maxsize=8)
def trusted_networks(proxies: tuple[str, ...]) -> tuple[Network, ...]:
    """`proxies` (addresses or CIDR networks, e.g. "10.0.0.0/8") as networks.

    Raises ValueError for an entry that is neither: a typo must not trust everyone."""
    return tuple(ipaddress.ip_network(p.strip(), strict=False) for p in proxies if p.strip())


def _address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    text = text.strip()
    if text.startswith("[") and "]" in text:  # "[2001:db8::1]:443"
        text = text[1 : text.index("]")]
    elif text.count(":") == 1:  # "203.0.113.7:51000"
        text = text.split(":")[0]
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    mapped = getattr(address, "ipv4_mapped", None)
    return mapped or address


def client_address(meta: Mapping[str, str], trusted_proxies: Iterable[str]) -> str:
    """The address of the client that sent the request: the socket peer (REMOTE_ADDR),
    unless that peer is a trusted proxy; then X-Forwarded-For is read from the right
    (each proxy appends the address it received from) past every trusted proxy, and the
    first address that is not one is the client. Entries a client wrote itself sit to
    the left of that and are never believed (the rule of nginx's real_ip_recursive).
    A malformed entry ends the walk at the last good address. "" when there is none.

    `trusted_proxies`: the HILLMIX_TRUSTED_PROXIES setting (addresses or networks).
    """
    networks = trusted_networks(tuple(trusted_proxies))
    peer = _address(meta.get("REMOTE_ADDR", ""))
    if peer is None:
        return ""

    def trusted(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
        return any(address.version == n.version and address in n for n in networks)

    address = peer
    hops = [h for h in meta.get("HTTP_X_FORWARDED_FOR", "").split(",") if h.strip()]
    while trusted(address) and hops:
        hop = _address(hops.pop())
        if hop is None:
            break
        address = hop
    return str(address)
