"""Where an endpoint's URL leads, and whether the platform may call it (SSRF).

The host is resolved and every address it resolves to must be a public one (`domain.forbidden_address`), at
registration and again at every delivery; the delivery then connects to the very address that was checked (the
URL's host kept in the Host header and, for https, in the TLS server name), so a DNS answer that changes between
the check and the connection (DNS rebinding) cannot lead the request elsewhere. A platform that allows private
targets (development, tests) sends to the URL as it is.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from webhooks.domain import IpAddress, forbidden_address


class TargetRefused(Exception):
    """The URL leads where the platform must not call, or nowhere; `code` is the API's error code."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail


@dataclass(frozen=True)
class Target:
    """What a request to an endpoint is sent to: `url` (with the checked address in place of the host), and the
    headers and request extensions that keep the original host for the server and TLS."""

    url: str
    headers: dict[str, str] = field(default_factory=dict)
    extensions: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class TargetGuard:
    allow_private: bool

    async def check(self, url: str) -> Target:
        """The target to send to; raises `TargetRefused` (target_not_allowed, target_unresolvable)."""
        if self.allow_private:
            return Target(url)
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = parts.port or (443 if parts.scheme == "https" else 80)
        addresses = await _resolve(host, port)
        for address in addresses:
            reason = forbidden_address(address)
            if reason is not None:
                raise TargetRefused("target_not_allowed", f"{host} resolves to {address}, {reason}")
        chosen = addresses[0]
        literal = f"[{chosen}]" if chosen.version == 6 else str(chosen)
        netloc = f"{literal}:{parts.port}" if parts.port else literal
        headers = {"Host": parts.netloc}
        extensions: dict[str, Any] = {"sni_hostname": host} if parts.scheme == "https" else {}
        return Target(urlunsplit(parts._replace(netloc=netloc)), headers, extensions)


async def _resolve(host: str, port: int) -> list[IpAddress]:
    try:
        return [ipaddress.ip_address(host.strip("[]"))]
    except ValueError:
        pass
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise TargetRefused("target_unresolvable", f"{host} does not resolve: {exc}") from exc
    addresses = list(dict.fromkeys(ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in infos))
    if not addresses:
        raise TargetRefused("target_unresolvable", f"{host} resolves to no address")
    return addresses
