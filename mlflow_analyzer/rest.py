"""One small HTTP client for reading an MLflow tracking server's REST API.

Reads go straight to the endpoints and their JSON is parsed here (orjson when installed,
else the standard library), without MLflow's client: building protobuf messages from every
response (``json_format.ParseDict``) was 43% of the client's time over HTTP.

* Each request has a bounded timeout; connection errors, timeouts, 429 and 5xx are retried
  a bounded number of times with exponential backoff (``MLFLOW_HTTP_REQUEST_TIMEOUT``,
  ``MLFLOW_HTTP_REQUEST_MAX_RETRIES``, as MLflow's own client reads them).
* Credentials as MLflow takes them: ``MLFLOW_TRACKING_TOKEN`` (bearer),
  ``MLFLOW_TRACKING_USERNAME`` / ``MLFLOW_TRACKING_PASSWORD`` or ``user:password@`` in the
  URI (basic); ``MLFLOW_TRACKING_INSECURE_TLS``, ``MLFLOW_TRACKING_SERVER_CERT_PATH``.
* Every message names the server by :func:`masked`, never with its credentials.
* Connections are kept alive, one per thread, so parallel reads reuse them.

Standard library only.
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import socket
import ssl
import threading
import time
from typing import Any
from urllib.parse import urlencode, urlsplit, urlunsplit

from .errors import NotFoundError, SourceError

try:  # optional: faster parsing of large responses
    import orjson as _orjson

    def loads(data: bytes | str) -> Any:
        return _orjson.loads(data)

except ImportError:  # pragma: no cover - depends on the environment

    def loads(data: bytes | str) -> Any:
        return json.loads(data)


DEFAULT_TIMEOUT = 120.0  # MLflow's own client default
DEFAULT_RETRIES = 2
RETRY_STATUS = (429, 500, 502, 503, 504)


def masked(uri: str) -> str:
    """The URI without ``user:password@``."""
    parts = urlsplit(uri)
    if parts.username is None and parts.password is None:
        return uri
    host = parts.hostname or ""
    if parts.port:
        host += f":{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, parts.query, parts.fragment))


class RestError(SourceError):
    """The server answered with an error (``status``, MLflow's ``error_code``)."""

    def __init__(self, message: str, status: int | None = None, error_code: str | None = None):
        super().__init__(message)
        self.status = status
        self.error_code = error_code


class RestNotFound(RestError, NotFoundError):
    pass


def _env_float(name: str, default: float) -> float:
    try:
        return float(os.environ.get(name) or default)
    except ValueError:
        return default


class RestClient:
    """``get_json(path, params)`` and ``post_json(path, body)`` against one server."""

    def __init__(self, tracking_uri: str, *, timeout: float | None = None, retries: int | None = None):
        parts = urlsplit(tracking_uri.rstrip("/"))
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise SourceError(f"not an http(s) tracking URI: {masked(tracking_uri)}")
        self.uri = masked(tracking_uri)
        self.scheme = parts.scheme
        self.host = parts.hostname
        self.port = parts.port or (443 if parts.scheme == "https" else 80)
        self.prefix = parts.path.rstrip("/")
        self.timeout = timeout if timeout is not None else _env_float("MLFLOW_HTTP_REQUEST_TIMEOUT", DEFAULT_TIMEOUT)
        self.retries = retries if retries is not None else int(_env_float("MLFLOW_HTTP_REQUEST_MAX_RETRIES", DEFAULT_RETRIES))
        self.headers = {"Accept": "application/json", "User-Agent": "mlflow-analyzer"}
        token = os.environ.get("MLFLOW_TRACKING_TOKEN")
        user = parts.username or os.environ.get("MLFLOW_TRACKING_USERNAME")
        password = parts.password or os.environ.get("MLFLOW_TRACKING_PASSWORD")
        if token:
            self.headers["Authorization"] = f"Bearer {token}"
        elif user is not None:
            pair = f"{user}:{password or ''}".encode()
            self.headers["Authorization"] = "Basic " + base64.b64encode(pair).decode()
        self._ssl = None
        if self.scheme == "https":
            if os.environ.get("MLFLOW_TRACKING_INSECURE_TLS", "").lower() in ("1", "true"):
                self._ssl = ssl._create_unverified_context()
            else:
                self._ssl = ssl.create_default_context(cafile=os.environ.get("MLFLOW_TRACKING_SERVER_CERT_PATH") or None)
        self._local = threading.local()

    # -- connections (one per thread, kept alive)
    def _conn(self) -> http.client.HTTPConnection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            if self.scheme == "https":
                conn = http.client.HTTPSConnection(self.host, self.port, timeout=self.timeout, context=self._ssl)
            else:
                conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
            self._local.conn = conn
        return conn

    def _drop(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    def close(self) -> None:
        self._drop()

    # -- requests
    def request(self, method: str, path: str, *, params: dict | None = None, body: Any = None) -> bytes:
        target = self.prefix + path + (("?" + urlencode(params, doseq=True)) if params else "")
        payload = None
        headers = dict(self.headers)
        if body is not None:
            payload = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        attempt = 0
        while True:
            try:
                conn = self._conn()
                conn.request(method, target, body=payload, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
                status = resp.status
                if resp.getheader("Connection", "").lower() == "close":
                    self._drop()
            except (OSError, http.client.HTTPException) as exc:
                self._drop()
                if attempt < self.retries:
                    attempt += 1
                    time.sleep(min(8.0, 0.5 * 2 ** (attempt - 1)))
                    continue
                what = "timed out" if isinstance(exc, socket.timeout) else (getattr(exc, "strerror", None) or str(exc) or type(exc).__name__)
                raise SourceError(f"cannot read {self.uri}{path} ({what}; {attempt + 1} attempt(s), "
                                  f"timeout {self.timeout:g} s)") from None
            if status < 400:
                return data
            if status in RETRY_STATUS and attempt < self.retries:
                attempt += 1
                time.sleep(min(8.0, 0.5 * 2 ** (attempt - 1)))
                continue
            raise self._error(status, data, path)

    def _error(self, status: int, data: bytes, path: str) -> RestError:
        code, message = None, ""
        try:
            doc = loads(data)
            code, message = doc.get("error_code"), str(doc.get("message") or "")
        except (ValueError, AttributeError, TypeError):
            message = data[:200].decode("utf-8", "replace").strip()
        message = (message.splitlines() or [""])[0][:300]
        text = f"{self.uri}{path}: HTTP {status}" + (f" {code}" if code else "") + (f": {message}" if message else "")
        if status == 404 or code in ("RESOURCE_DOES_NOT_EXIST", "NOT_FOUND"):
            return RestNotFound(text, status, code)
        return RestError(text, status, code)

    def get_json(self, path: str, params: dict | None = None) -> Any:
        return self._json(self.request("GET", path, params=params), path)

    def post_json(self, path: str, body: Any) -> Any:
        return self._json(self.request("POST", path, body=body), path)

    def _json(self, data: bytes, path: str) -> Any:
        try:
            return loads(data) if data else {}
        except ValueError:
            raise SourceError(f"{self.uri}{path}: the server's answer is not JSON") from None
