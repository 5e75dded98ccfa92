"""The node's HTTP client for the control plane's agent API (node-token authenticated)."""

import http.client
import json
import urllib.error
import urllib.request
from typing import Any


class ControlPlaneError(Exception):
    """The control plane could not be asked (network error, 5xx, or a malformed answer)."""


class ControlPlane:
    def __init__(self, base_url: str, token: str, *, timeout: float = 3.0) -> None:
        self.base_url = base_url.rstrip("/")
        self._token = token
        self.timeout = timeout

    def _call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(  # noqa: S310 - the operator's control-plane URL
            self.base_url + path,
            data=data,
            method=method,
            headers={"Authorization": f"Bearer {self._token}", "Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:  # noqa: S310
                return response.status, json.load(response).get("payload")
        except urllib.error.HTTPError as error:
            if error.code >= 500:
                raise ControlPlaneError(f"{method} {path}: HTTP {error.code}") from None
            return error.code, None
        except (OSError, ValueError) as error:
            raise ControlPlaneError(f"{method} {path}: {error}") from None

    def live_streams(self) -> list[dict[str, Any]]:
        """The streams the control plane says are live on this node, with their destinations:
        [{streamID, streamKey, destinations}]."""
        status, payload = self._call("GET", "/agents/streams")
        if status != 200 or not isinstance(payload, list):
            raise ControlPlaneError(f"GET /agents/streams: HTTP {status}")
        return payload

    def pulls(self) -> list[dict[str, Any]]:
        """The streams this node should pull into its ingest:
        [{streamID, streamKey, url, token, restartSeq}]."""
        status, payload = self._call("GET", "/agents/pulls")
        if status != 200 or not isinstance(payload, list):
            raise ControlPlaneError(f"GET /agents/pulls: HTTP {status}")
        return payload

    def report(self, body: dict[str, Any]) -> None:
        """The node's heartbeat (Agent.status_report builds it)."""
        status, _ = self._call("POST", "/agents/status", body)
        if status != 200:
            raise ControlPlaneError(f"POST /agents/status: HTTP {status}")

    def admit_publish(self, form: bytes, timeout: float) -> int:
        """Ask the control plane's publish hook whether nginx may admit a publisher (the form
        nginx-rtmp posts, as it posted it): its HTTP status, 502 when it could not be asked
        (nginx then refuses: the hook fails closed, as it would calling the control plane)."""
        request = urllib.request.Request(  # noqa: S310 - the operator's control-plane URL
            f"{self.base_url}/agents/hooks/{self._token}/publish",
            data=form,
            method="POST",
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
        try:
            with _NO_REDIRECTS.open(request, timeout=timeout) as response:
                return int(response.status)
        except urllib.error.HTTPError as error:
            return int(error.code)  # a 3xx too: the caller refuses anything but 2xx
        except (OSError, http.client.HTTPException):
            return 502


class _Refuse3xx(urllib.request.HTTPRedirectHandler):
    """A redirect is an answer, not an address to follow: the publish hook never redirects, and
    a followed POST would turn into a GET that some other page might answer 2xx."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


_NO_REDIRECTS = urllib.request.build_opener(_Refuse3xx)
