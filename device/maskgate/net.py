"""Who is asking: which addresses are this machine, and the token a request presents.

Two questions with two answers. ``is_loopback`` — may a server bind here, or a ``Host`` name be answered,
without exposing the daemon to the network: any loopback address (127.0.0.0/8, ::1, ``localhost``).
``is_local_client`` — is a connected client this machine itself (the kiosk), trusted without a token:
exactly 127.0.0.1 or ::1, so that another loopback address such as 127.0.0.2 stands in for another host.
"""

from __future__ import annotations

import hmac
import ipaddress

LOCAL_CLIENTS = frozenset({"127.0.0.1", "::1", "::ffff:127.0.0.1"})


def is_loopback(host: str) -> bool:
    """127.0.0.0/8, ::1 or localhost: reachable from this machine only."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def is_local_client(host: str | None) -> bool:
    """The client's address is this machine's own (127.0.0.1 or ::1): no token needed."""
    return host in LOCAL_CLIENTS


def bearer_matches(authorization: str, token: bytes | None) -> bool:
    """An ``Authorization: Bearer <token>`` header value carries ``token`` (compared in constant time)."""
    scheme, _, value = authorization.partition(" ")
    return (token is not None and scheme.lower() == "bearer"
            and hmac.compare_digest(value.strip().encode(), token))
