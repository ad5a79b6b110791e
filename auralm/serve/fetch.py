"""Fetching audio named by a URL without becoming a proxy into the server's network (SSRF).

http(s): off unless domains are allowed. The host must be on the allowlist; every address it resolves to must be
public (not private, loopback, link-local, multicast, reserved or unspecified, IPv4 inside IPv6 included); the
connection goes to the address that was checked, so a DNS answer that changes between check and use (rebinding)
cannot redirect it; each redirect is checked the same way; the download has a deadline and stops at the byte cap,
counted on the bytes as they arrive. Compressed responses (Content-Encoding) are refused, never decompressed: a
1 MB gzip body can expand to gigabytes before any cap on decompressed chunks sees it.

file://: off unless a folder is allowed; the path is resolved (symlinks followed) and must stay inside that folder,
and it must name a regular file: it is opened without blocking (a FIFO would wait forever for a writer) and the
opened descriptor is checked, so a directory, FIFO, socket or device is refused and the descriptor always closed.
"""

from __future__ import annotations

import ipaddress
import os
import re
import socket
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urljoin, urlsplit

import httpx

from auralm.serve.errors import ServeError, bad_request, too_large
from auralm.serve.settings import ServeSettings

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
_HOSTNAME = re.compile(r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*$")
_REDIRECTS = (301, 302, 303, 307, 308)
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_CHUNK = 64 * 1024
# O_NOFOLLOW: a symlink swapped in after resolve() is not followed out of the folder. O_NONBLOCK: opening a FIFO
# returns at once instead of waiting for a writer (reads of regular files ignore it).
_OPEN_FLAGS = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)


def system_resolve(host: str, port: int) -> list[str]:
    """Every address the system resolver gives for host (IPv4 and IPv6)."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(info[4][0] for info in infos))


def is_public_address(ip: IPAddress) -> bool:
    """True for addresses on the public internet; an IPv4 address embedded in IPv6 is judged as IPv4."""
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = ip.ipv4_mapped or ip.sixtofour
        if embedded is None and ip in _NAT64:
            embedded = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
        if embedded is not None:
            return is_public_address(embedded)
    return ip.is_global and not (
        ip.is_private or ip.is_loopback or ip.is_link_local or ip.is_multicast or ip.is_reserved or ip.is_unspecified
    )


@dataclass(frozen=True)
class FetchPolicy:
    """Where audio may come from and how much of it."""

    allow_domains: tuple[str, ...] = ()  # lower-case hosts; a subdomain of one is allowed too; empty: no http(s)
    allow_file_dir: Path | None = None  # resolved folder file:// paths must stay in; None: no file://
    max_bytes: int = 20 * 1024 * 1024  # bytes of one audio, counted while downloading or reading
    timeout: float = 10.0  # seconds for a whole download, redirects included
    max_redirects: int = 3  # redirects followed, each re-checked
    resolve: Callable[[str, int], list[str]] = system_resolve  # test hook: host, port -> addresses
    trusted_addresses: frozenset[str] = field(default_factory=frozenset)  # test hook: addresses exempt from the
    # public-address rule (a test server on a loopback address); empty in every real deployment

    @classmethod
    def from_settings(cls, settings: ServeSettings, **hooks) -> FetchPolicy:
        return cls(
            allow_domains=settings.allow_domains, allow_file_dir=settings.allow_file_dir,
            max_bytes=settings.max_audio_bytes, timeout=settings.fetch_timeout,
            max_redirects=settings.max_redirects, **hooks,
        )


class AudioFetcher:
    """`fetch(url) -> bytes` for http(s):// and file:// URLs under a `FetchPolicy`; refusals are `ServeError`s."""

    def __init__(self, policy: FetchPolicy):
        self.policy = policy

    def fetch(self, url: str) -> bytes:
        scheme = url.split(":", 1)[0].lower() if ":" in url else ""
        if scheme == "file":
            return self._read_file(url)
        if scheme in ("http", "https"):
            return self._download(url)
        raise bad_request("audio_url must be a data:, http(s):// or file:// URL", "unsupported_url")

    # ---- file:// -------------------------------------------------------------------------------------------
    def _read_file(self, url: str) -> bytes:
        folder = self.policy.allow_file_dir
        if folder is None:
            raise bad_request("file:// audio URLs are disabled on this server", "file_urls_disabled")
        parts = urlsplit(url)
        if parts.netloc not in ("", "localhost"):
            raise bad_request("file:// URLs must name a local path", "path_not_allowed")
        raw = unquote(parts.path)
        if "\0" in raw:  # no file name holds one; the OS would refuse it with a ValueError
            raise bad_request("the file path holds a NUL byte", "invalid_url")
        try:
            # Resolve without requiring existence first, so a refusal does not tell which outside paths exist.
            path = Path(raw).resolve()
        except (OSError, RuntimeError):  # a symlink loop, a name too long
            raise bad_request("the file path cannot be resolved", "invalid_url") from None
        if not path.is_relative_to(folder):
            raise bad_request("the file is outside the folder this server may read", "path_not_allowed")
        try:
            if not stat.S_ISREG(os.stat(path).st_mode):  # before opening: opening a device can itself act
                raise self._not_a_file()
            fd = os.open(path, _OPEN_FLAGS)
        except OSError:
            raise bad_request("the audio file does not exist or cannot be read", "file_not_found") from None
        try:
            info = os.fstat(fd)  # the file actually opened: the path may have been swapped since the stat
            if not stat.S_ISREG(info.st_mode):
                raise self._not_a_file()
            if info.st_size > self.policy.max_bytes:
                raise self._too_big()
            chunks, size = [], 0
            while size <= self.policy.max_bytes:
                chunk = os.read(fd, min(16 * _CHUNK, self.policy.max_bytes + 1 - size))
                if not chunk:
                    break
                chunks.append(chunk)
                size += len(chunk)
        except OSError:
            raise bad_request("the audio file does not exist or cannot be read", "file_not_found") from None
        finally:
            os.close(fd)
        if size > self.policy.max_bytes:  # grew while reading
            raise self._too_big()
        return b"".join(chunks)

    # ---- http(s):// ----------------------------------------------------------------------------------------
    def _download(self, url: str) -> bytes:
        if not self.policy.allow_domains:
            raise bad_request("remote audio URLs are disabled on this server", "remote_urls_disabled")
        deadline = time.monotonic() + self.policy.timeout
        with httpx.Client(trust_env=False, follow_redirects=False) as client:
            for _ in range(self.policy.max_redirects + 1):
                host, address = self._check_remote(url)
                try:
                    target = httpx.URL(url)
                except httpx.InvalidURL:
                    raise bad_request("the audio URL is malformed", "invalid_url") from None
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise self._timed_out()
                headers = {"Host": target.netloc.decode("ascii"), "Accept-Encoding": "identity"}
                extensions = {"sni_hostname": host} if target.scheme == "https" else {}
                request = client.build_request(
                    "GET", target.copy_with(host=address), headers=headers, extensions=extensions,
                    timeout=httpx.Timeout(remaining),
                )
                try:
                    response = client.send(request, stream=True)
                    try:
                        if response.status_code in _REDIRECTS and "location" in response.headers:
                            url = urljoin(url, response.headers["location"])
                            continue
                        return self._body(response, deadline)
                    finally:
                        response.close()
                except httpx.TimeoutException:
                    raise self._timed_out() from None
                except httpx.HTTPError:
                    raise bad_request("the audio URL could not be downloaded", "fetch_failed") from None
        raise bad_request(f"the audio URL redirected more than {self.policy.max_redirects} times", "too_many_redirects")

    def _check_remote(self, url: str) -> tuple[str, str]:
        """The URL's host and the checked address to connect to; refuses anything not allowed."""
        try:
            parts = urlsplit(url)
            port = parts.port or (443 if parts.scheme.lower() == "https" else 80)
        except ValueError:
            raise bad_request("the audio URL is malformed", "invalid_url") from None
        if parts.scheme.lower() not in ("http", "https"):
            raise bad_request("audio URLs may only redirect to http(s)://", "url_not_allowed")
        if parts.username is not None or parts.password is not None:
            raise bad_request("audio URLs may not carry credentials", "url_not_allowed")
        host = (parts.hostname or "").rstrip(".")
        literal = _ip_literal(host)
        if literal is None and not _HOSTNAME.match(host):
            raise bad_request("the audio URL's host is not a valid host name", "invalid_url")
        if not any(host == d or host.endswith("." + d) for d in self.policy.allow_domains):
            raise bad_request("the audio URL's host is not on this server's allowlist", "domain_not_allowed")
        if literal is not None:
            addresses = [literal]
        else:
            try:
                addresses = [_ip_literal(a.split("%", 1)[0]) for a in self.policy.resolve(host, port)]
            except (OSError, UnicodeError):
                raise bad_request("the audio URL's host could not be resolved", "fetch_failed") from None
            if not addresses or None in addresses:
                raise bad_request("the audio URL's host could not be resolved", "fetch_failed")
        # Every address must pass: a resolver may hand out any of them, and a mixed answer is itself suspicious.
        for ip in addresses:
            if str(ip) not in self.policy.trusted_addresses and not is_public_address(ip):
                raise bad_request("the audio URL points to a private or reserved network address", "private_address")
        return host, str(addresses[0])

    def _body(self, response: httpx.Response, deadline: float) -> bytes:
        if response.status_code != 200:
            raise bad_request(f"the audio URL answered HTTP {response.status_code}", "fetch_failed")
        if response.headers.get("content-encoding", "identity").strip().lower() not in ("", "identity"):
            # Asked for identity; decompressing is how a small body becomes a huge one, so it is never done.
            raise bad_request("the audio URL answered with a compressed body (Content-Encoding); serve the audio "
                              "file uncompressed", "compressed_response")
        declared = response.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.policy.max_bytes:
            raise self._too_big()
        chunks, size = [], 0
        for chunk in response.iter_raw(_CHUNK):  # the bytes on the wire: nothing expands them before the count
            size += len(chunk)
            if size > self.policy.max_bytes:
                raise self._too_big()
            if time.monotonic() > deadline:
                raise self._timed_out()
            chunks.append(chunk)
        return b"".join(chunks)

    def _not_a_file(self) -> ServeError:
        return bad_request("the audio path is not a regular file (a directory, FIFO, socket or device)", "not_a_file")

    def _too_big(self) -> ServeError:
        return too_large(f"an audio is larger than this server's limit of {self.policy.max_bytes} bytes",
                         "audio_too_large")

    def _timed_out(self) -> ServeError:
        return bad_request(f"downloading the audio URL took longer than {self.policy.timeout:g} s", "fetch_timeout")


def _ip_literal(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None
