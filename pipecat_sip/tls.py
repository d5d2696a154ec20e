"""TLS contexts for SIP over TLS (RFC 3261 s.26.2, RFC 5630, RFC 5922).

:func:`server_context` serves our certificate on the TLS listener;
:func:`client_context` verifies the peers we connect to, against the
system's trust store or a configured CA bundle, with host name checking
against the name we connect to (the SIP URI's host, also sent as SNI).
Both refuse anything older than TLS 1.2. Verification can be turned off
(``verify=False``) for labs and tests only: a warning says so at start-up.

:class:`TLSConfig` holds the settings (``SIP_TLS_CERT``, ``SIP_TLS_KEY``,
``SIP_TLS_CA``, ``SIP_TLS_VERIFY`` in the runner) and :meth:`TLSConfig.load`
builds both contexts, raising :class:`TLSConfigError` with one clear line
for a missing, unreadable or mismatched file, before any socket is opened.
"""

from __future__ import annotations

import os
import ssl
from dataclasses import dataclass

__all__ = [
    "TLSConfig",
    "TLSConfigError",
    "client_context",
    "server_context",
    "verify_failure",
]

_MIN_VERSIONS = {"1.2": ssl.TLSVersion.TLSv1_2, "1.3": ssl.TLSVersion.TLSv1_3}


class TLSConfigError(ValueError):
    """A TLS setting cannot be used; the message is one line naming the file and why.

    Attributes:
        setting: Which setting: "cert", "key", "ca" or "min_version".
    """

    def __init__(self, setting: str, message: str) -> None:
        super().__init__(message)
        self.setting = setting


@dataclass(frozen=True)
class TLSConfig:
    """TLS settings of a SIP server.

    Attributes:
        cert_file: PEM certificate chain served on the TLS listener (and
            offered to peers that ask for a client certificate); None: no
            TLS listener, outbound TLS only.
        key_file: PEM private key of ``cert_file``; None when the key is in
            ``cert_file``.
        ca_file: PEM CA bundle that peers' certificates must chain to; None
            for the system's trust store.
        verify: Verify peers' certificates and host names (default). False
            is for labs and tests only.
        min_version: Oldest TLS version accepted, "1.2" (default) or "1.3".
    """

    cert_file: str | None = None
    key_file: str | None = None
    ca_file: str | None = None
    verify: bool = True
    min_version: str = "1.2"

    def load(self) -> tuple[ssl.SSLContext | None, ssl.SSLContext]:
        """Build the (server, client) contexts; server is None without a certificate.

        Raises:
            TLSConfigError: A file is missing, unreadable, not PEM, or the key
                does not match the certificate.
        """
        server = None
        if self.cert_file is not None:
            server = server_context(self.cert_file, self.key_file, min_version=self.min_version)
        elif self.key_file is not None:
            raise TLSConfigError("key", f"TLS key {self.key_file} given without a certificate")
        client = client_context(
            self.ca_file,
            verify=self.verify,
            cert_file=self.cert_file,
            key_file=self.key_file,
            min_version=self.min_version,
        )
        return server, client


def _check_readable(path: str, setting: str, what: str) -> None:
    if not os.path.exists(path):
        raise TLSConfigError(setting, f"TLS {what} {path}: no such file")
    if os.path.isdir(path):
        raise TLSConfigError(setting, f"TLS {what} {path}: is a directory")
    try:
        with open(path, "rb") as f:
            head = f.read(65536)
    except OSError as exc:
        raise TLSConfigError(setting, f"TLS {what} {path}: cannot read ({exc.strerror})") from None
    if b"-----BEGIN" not in head:
        raise TLSConfigError(setting, f"TLS {what} {path}: not a PEM file")


def _min_version(value: str) -> ssl.TLSVersion:
    version = _MIN_VERSIONS.get(value)
    if version is None:
        raise TLSConfigError("min_version", f"TLS minimum version {value!r} is not 1.2 or 1.3")
    return version


def server_context(
    cert_file: str, key_file: str | None = None, *, min_version: str = "1.2"
) -> ssl.SSLContext:
    """The context of a TLS listener: our certificate, TLS >= ``min_version``, no client certs.

    Args:
        cert_file: PEM certificate chain (leaf first).
        key_file: PEM private key; None when it is in ``cert_file``.
        min_version: "1.2" or "1.3".

    Raises:
        TLSConfigError: A file is missing, unreadable or not PEM, or the key
            does not match the certificate.
    """
    _check_readable(cert_file, "cert", "certificate")
    if key_file is not None:
        _check_readable(key_file, "key", "key")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = _min_version(min_version)
    try:
        context.load_cert_chain(cert_file, key_file)
    except ssl.SSLError as exc:
        reason = exc.reason or str(exc)
        if "KEY_VALUES_MISMATCH" in str(exc) or "key values mismatch" in str(exc):
            raise TLSConfigError(
                "key", f"TLS key {key_file or cert_file} does not match certificate {cert_file}"
            ) from None
        setting = "key" if key_file is not None and "KEY" in str(reason).upper() else "cert"
        raise TLSConfigError(
            setting, f"TLS certificate {cert_file} / key {key_file or cert_file}: {reason}"
        ) from None
    except OSError as exc:
        raise TLSConfigError("cert", f"TLS certificate {cert_file}: {exc}") from None
    context.verify_mode = ssl.CERT_NONE  # SIP clients rarely present certificates
    return context


def client_context(
    ca_file: str | None = None,
    *,
    verify: bool = True,
    cert_file: str | None = None,
    key_file: str | None = None,
    min_version: str = "1.2",
) -> ssl.SSLContext:
    """The context of our outbound TLS connections.

    Args:
        ca_file: PEM CA bundle to trust; None for the system's trust store.
        verify: Verify the peer's certificate chain and host name (RFC 5922
            s.7.2: against the host we meant to reach). False: any certificate
            (labs and tests only).
        cert_file: Our certificate, offered when a peer asks for one.
        key_file: Its key.
        min_version: "1.2" or "1.3".

    Raises:
        TLSConfigError: A file is missing, unreadable or not PEM.
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = _min_version(min_version)
    if verify:
        context.check_hostname = True
        context.verify_mode = ssl.CERT_REQUIRED
        if ca_file is not None:
            _check_readable(ca_file, "ca", "CA bundle")
            try:
                context.load_verify_locations(cafile=ca_file)
            except ssl.SSLError as exc:
                raise TLSConfigError("ca", f"TLS CA bundle {ca_file}: {exc.reason}") from None
        else:
            context.load_default_certs(ssl.Purpose.SERVER_AUTH)
    else:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    if cert_file is not None:
        try:
            context.load_cert_chain(cert_file, key_file)
        except (ssl.SSLError, OSError) as exc:
            raise TLSConfigError("cert", f"TLS certificate {cert_file}: {exc}") from None
    return context


def verify_failure(exc: BaseException) -> str | None:
    """A one-line reason when ``exc`` is a failed certificate check, else None.

    Example: ``"certificate verify failed: self-signed certificate"``, or
    ``"certificate verify failed: Hostname mismatch, certificate is not valid
    for 'sip.example.com'"``.
    """
    if isinstance(exc, ssl.SSLCertVerificationError):
        detail = exc.verify_message or exc.reason or str(exc)
        return f"certificate verify failed: {detail}"
    return None
