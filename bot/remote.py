"""Which address a request came from, behind a reverse proxy too."""

from __future__ import annotations

from ipaddress import IPv4Network, IPv6Network, ip_address

from aiohttp import web

Networks = tuple[IPv4Network | IPv6Network, ...]


def remote_address(request: web.Request, trusted_proxies: Networks) -> str:
    """The client's address. Behind a reverse proxy listed in `[server] trusted_proxies`,
    the nearest address in X-Forwarded-For that is not one of those proxies; otherwise the
    connection's own. (Believing the header from anyone else would let a client pick its
    own address, and dodge a limit.) Used for limits only: never stored or logged."""
    remote = request.remote or "unknown"
    if not trusted_proxies or not within(remote, trusted_proxies):
        return remote
    hops = [h.strip() for h in request.headers.get("X-Forwarded-For", "").split(",")]
    for hop in reversed([h for h in hops if h]):
        if not within(hop, trusted_proxies):
            return hop
    return remote


def within(address: str, networks: Networks) -> bool:
    try:
        ip = ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in networks)
