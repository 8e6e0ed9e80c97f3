"""What a Fetcher may read: local roots, address blocking, size/time limits, retries and rate limits.

The server turns `block_private` on so that SQL `fetch()` cannot be used to probe internal networks (SSRF).
"""
from __future__ import annotations

import ipaddress
import os
import socket
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from visiondb.errors import AccessDeniedError, ConfigError, FetchError

MiB = 1024 * 1024

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass
class FetchPolicy:
    """Limits and access rules applied to every byte a Fetcher reads."""

    allowed_roots: list[Path] | None = None
    allow_local: bool = True
    allow_fetch: list[str] = field(default_factory=list)
    block_private: bool = False
    max_bytes: int = 64 * MiB
    max_archive_bytes: int = 4096 * MiB
    timeout: float = 20.0
    retries: int = 3
    backoff: float = 0.2
    max_redirects: int = 5
    rate_per_host: float | None = None
    concurrency: int = 16

    def __post_init__(self) -> None:
        if self.allowed_roots is not None:
            self.allowed_roots = [Path(r).expanduser().resolve() for r in self.allowed_roots]
        nets: list[IPNetwork] = []
        for item in self.allow_fetch:
            try:
                nets.append(ipaddress.ip_network(item.strip(), strict=False))
            except ValueError as exc:
                raise ConfigError(f"allow_fetch: {item!r} is not an IP address or CIDR network", field="allow_fetch") from exc
        self._allowed_nets = nets
        for name in ("max_bytes", "max_archive_bytes", "concurrency"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)!r}", field=name)
        for name in ("timeout", "backoff", "retries", "max_redirects"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be >= 0, got {getattr(self, name)!r}", field=name)
        if self.rate_per_host is not None and self.rate_per_host <= 0:
            raise ConfigError(f"rate_per_host must be > 0 or None, got {self.rate_per_host!r}", field="rate_per_host")

    # -- local paths -------------------------------------------------------------------------
    def check_path(self, path: str | Path, uri: str | None = None) -> Path:
        """Return the resolved real path if local reads are allowed and it lies under an allowed root."""
        uri = uri if uri is not None else str(path)
        if not self.allow_local:
            raise AccessDeniedError(f"local file access is disabled: {uri}", uri=uri)
        try:
            real = Path(path).expanduser().resolve()
            os.fsencode(real)  # a lone surrogate cannot name a file
            real.exists()  # raises for a name the OS refuses outright (too long)
        except (ValueError, RuntimeError, OSError) as exc:  # a NUL byte, an unencodable or overlong name, a loop
            raise FetchError(f"not a usable file path {uri[:200]!r}: {exc}", uri=uri[:200]) from None
        if self.allowed_roots is not None and not any(real.is_relative_to(root) for root in self.allowed_roots):
            roots = ", ".join(str(r) for r in self.allowed_roots)
            raise AccessDeniedError(f"path {uri} resolves to {real}, outside the allowed roots ({roots})", uri=uri)
        return real

    # -- network addresses -------------------------------------------------------------------
    def address_allowed(self, addr: IPAddress) -> bool:
        """True if `addr` may be contacted: public, or explicitly listed in `allow_fetch`."""
        if any(addr in net for net in self._allowed_nets if net.version == addr.version):
            return True
        if not self.block_private:
            return True
        if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
            return self.address_allowed(addr.ipv4_mapped)
        if not all(self.address_allowed(v4) for v4 in _embedded_ipv4(addr)):
            return False
        return addr.is_global and not (addr.is_multicast or addr.is_reserved or addr.is_unspecified)

    def check_url(self, url: str) -> None:
        """Refuse a URL this policy can never fetch (scheme, host, port). Its host's addresses are checked when
        the connection opens (`allowed_addresses`, called by `fetch.PinnedBackend`), once, on the addresses used."""
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https"):
            raise FetchError(f"unsupported URL scheme {parts.scheme!r}: {url}", uri=url)
        if not parts.hostname:
            raise FetchError(f"URL has no host: {url}", uri=url)
        if not self.block_private:
            return
        try:
            parts.port  # noqa: B018 - reading it raises ValueError on a malformed port
        except ValueError as exc:
            raise FetchError(f"invalid port in URL {url}", uri=url) from exc

    def allowed_addresses(self, host: str, port: int) -> list[str]:
        """The addresses `host` resolves to, in resolver order; AccessDeniedError if any of them is not allowed.

        The fetcher connects only to these, so a name cannot resolve to a public address for a check and to a
        private one for the connection (DNS rebinding). The caller names the URL in the error."""
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except socket.gaierror as exc:
            raise FetchError(f"cannot resolve host {host!r}: {exc.strerror or exc}") from exc
        addresses: list[str] = []
        for info in infos:
            raw = info[4][0].split("%", 1)[0]
            addr = ipaddress.ip_address(raw)
            if not self.address_allowed(addr):
                raise AccessDeniedError(
                    f"host {host} resolves to non-public address {addr} (add it to allow_fetch to permit)",
                    address=str(addr),
                )
            if raw not in addresses:
                addresses.append(raw)
        return addresses


def _embedded_ipv4(addr: IPAddress) -> list[ipaddress.IPv4Address]:
    """The IPv4 addresses a 6to4 (2002::/16) or Teredo (2001::/32) address routes to; each must be allowed too."""
    if not isinstance(addr, ipaddress.IPv6Address):
        return []
    found = [addr.sixtofour] if addr.sixtofour is not None else []
    return found + list(addr.teredo or ())
