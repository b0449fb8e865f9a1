"""The client of keysvc's `POST /v1/tokens`: one signed token per audience for a run."""

from __future__ import annotations

import ssl
import urllib.parse
from pathlib import Path

from keysvc.creds.context import RunContext
from keysvc.creds.errors import CredsError, TokenRequestError
from keysvc.creds.http import DEFAULT_RETRY, RetryPolicy, Unreachable, error_detail, post_json
from keysvc.errors import ConfigError
from keysvc.secrets import read_secret_file


class TokenClient:
    def __init__(
        self,
        url: str,
        bearer_token: str,
        *,
        timeout: float = 10.0,
        retry: RetryPolicy = DEFAULT_RETRY,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise CredsError(f"the keysvc URL must be http:// or https://HOST[:PORT], not {url!r}")
        if not bearer_token:
            raise CredsError("the keysvc client token is empty")
        self.url = url.rstrip("/")
        self._bearer = bearer_token
        self.timeout = timeout
        self.retry = retry
        self.ssl_context = ssl_context

    @classmethod
    def from_token_file(cls, url: str, token_file: Path, **kwargs: object) -> TokenClient:
        """A client whose bearer token is read from a file only its owner may read."""
        try:
            token = read_secret_file(Path(token_file), "client token file").decode().strip()
        except ConfigError as exc:
            raise CredsError(str(exc)) from None
        return cls(url, token, **kwargs)  # type: ignore[arg-type]

    def issue(self, context: RunContext, audience: str) -> str:
        """A token for `audience`, or TokenRequestError once retries are spent."""
        endpoint = f"{self.url}/v1/tokens"
        try:
            reply = post_json(
                endpoint,
                context.token_request(audience),
                {"Authorization": f"Bearer {self._bearer}"},
                timeout=self.timeout,
                retry=self.retry,
                ssl_context=self.ssl_context,
            )
        except Unreachable as exc:
            raise TokenRequestError(f"keysvc at {self.url} did not issue a token: {exc}") from None
        token = reply.body.get("token") if isinstance(reply.body, dict) else None
        if reply.status != 200 or not isinstance(token, str) or not token:
            raise TokenRequestError(
                f"keysvc at {self.url} refused a token for audience {audience!r}: "
                f"{error_detail(reply)}"
            )
        return token
