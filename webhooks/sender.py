"""Sending one signed webhook request: URL rules, the signature, and a guarded HTTP POST.

Signature (Stripe-like): ``Rig-Webhook-Signature: v1=<hex HMAC-SHA256(secret,
f"{timestamp}.{body}")>`` where ``timestamp`` is the ``Rig-Webhook-Timestamp`` header (unix
seconds) and ``body`` the raw request body, so a receiver can refuse replays of old requests.
"""

import hashlib
import hmac
import http.client
import urllib.error
import urllib.request
from typing import Any

from rig import ssrf

USER_AGENT = "rig-webhooks/1"
MAX_URL_LENGTH = 2000


def url_error(url: str) -> str | None:
    """Why a webhook URL is refused, or None when it is acceptable."""
    return ssrf.url_error(
        url, default_ports={"http": 80, "https": 443}, max_length=MAX_URL_LENGTH, allow_query=True
    )


def signature(secret: str, timestamp: int, body: bytes) -> str:
    signed = f"{timestamp}.".encode() + body
    return "v1=" + hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()


class _GuardedHTTPConnection(http.client.HTTPConnection):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._create_connection = ssrf.create_connection


class _GuardedHTTPSConnection(http.client.HTTPSConnection):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._create_connection = ssrf.create_connection


class _HTTPHandler(urllib.request.HTTPHandler):
    def http_open(self, req: urllib.request.Request) -> Any:
        return self.do_open(_GuardedHTTPConnection, req)


class _HTTPSHandler(urllib.request.HTTPSHandler):
    def https_open(self, req: urllib.request.Request) -> Any:
        return self.do_open(_GuardedHTTPSConnection, req, context=self._context)  # type: ignore[attr-defined]


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """A redirect is an answer, not an instruction: 3xx is recorded as a failed attempt."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


# No proxies from the environment either: the connection must go where the guard checked.
_opener = urllib.request.build_opener(
    urllib.request.ProxyHandler({}), _HTTPHandler, _HTTPSHandler, _NoRedirect
)


def post(
    *, url: str, secret: str, webhook_id: str, timestamp: int, body: bytes, timeout: float
) -> tuple[int | None, str]:
    """POST a signed body; (HTTP status or None, error text or "") without raising."""
    error = url_error(url)
    if error:
        return None, error
    request = urllib.request.Request(  # noqa: S310 - scheme checked by url_error above
        url,
        data=body,
        method="POST",
        headers={
            "Content-Type": "application/json",
            "User-Agent": USER_AGENT,
            "Rig-Webhook-Id": webhook_id,
            "Rig-Webhook-Timestamp": str(timestamp),
            "Rig-Webhook-Signature": signature(secret, timestamp, body),
        },
    )
    try:
        with _opener.open(request, timeout=timeout) as response:
            return int(response.status), ""
    except urllib.error.HTTPError as exc:
        exc.close()
        return int(exc.code), f"HTTP {exc.code}"
    except Exception as exc:  # whatever went wrong, this attempt failed: retried, then given up
        reason = getattr(exc, "reason", None) or exc
        return None, f"{type(exc).__name__}: {reason}"[:200]
