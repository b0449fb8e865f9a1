"""The client of keysvc's `POST /v1/tokens`: one signed token per audience for a run."""

from __future__ import annotations

import ssl
from pathlib import Path

from keysvc.creds.checks import is_token68, shown_url, url_problem
from keysvc.creds.errors import CredsError, TokenRequestError
from keysvc.creds.http import DEFAULT_RETRY, RetryPolicy, Unreachable, error_detail, post_json
from keysvc.errors import ConfigError
from keysvc.run_identity import Run
from keysvc.secrets import read_secret_file

TOKEN_RULE = (
    "it must be one line of letters, digits and - . _ ~ + / (then optional =),"
    " as RFC 6750 allows for a bearer token"
)


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
        problem = url_problem(url)
        if problem is not None:
            raise CredsError(f"the keysvc URL{shown_url(url)} {problem}")
        if not bearer_token:
            raise CredsError("the keysvc client token is empty")
        if not is_token68(bearer_token):
            raise CredsError(f"the keysvc client token is not valid: {TOKEN_RULE}")
        self.url = url.rstrip("/")
        self._bearer = bearer_token
        self.timeout = timeout
        self.retry = retry
        self.ssl_context = ssl_context

    @classmethod
    def from_token_file(cls, url: str, token_file: Path, **kwargs: object) -> TokenClient:
        """A client whose bearer token is read from a file only its owner may read."""
        try:
            raw = read_secret_file(Path(token_file), "client token file")
        except ConfigError as exc:
            raise CredsError(str(exc)) from None
        try:
            token = raw.decode("ascii").strip()
        except UnicodeDecodeError:
            token = None
        if token is None or (token and not is_token68(token)):
            # neither the token nor the decoder's message (which quotes bytes of it) is shown
            raise CredsError(
                f"the client token file {token_file} does not hold a valid token: {TOKEN_RULE}"
            ) from None
        if not token:
            raise CredsError(f"the client token file {token_file} is empty")
        return cls(url, token, **kwargs)  # type: ignore[arg-type]

    def issue(self, run: Run, audience: str) -> str:
        """A token for `audience`, or TokenRequestError once retries are spent."""
        endpoint = f"{self.url}/v1/tokens"
        try:
            reply = post_json(
                endpoint,
                run.token_request(audience),
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
        if not is_token68(token):  # it goes into files, variables and headers as it is
            raise TokenRequestError(
                f"keysvc at {self.url} answered with a malformed token for audience {audience!r}"
            )
        return token
