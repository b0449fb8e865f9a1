"""`keysvc serve` with the naive RSA form, for tests only: each request handler signs inline on
the event loop (what keysvc/loop_signer.py's queue replaced). It exists to show that the
starvation test in tests/test_rsa_saturation.py catches that form:
`python -m tests.inline_rsa_serve serve ARGS`."""

from __future__ import annotations

from keysvc import jose
from keysvc.backends.base import KeyVersion
from keysvc.backends.file import FileBackend
from keysvc.cli import main


def _never_at_once(self: FileBackend, version: KeyVersion, alg: jose.Algorithm) -> bool:
    return False


async def _sign_inline(
    self: FileBackend, version: KeyVersion, alg: jose.Algorithm, message: bytes
) -> bytes:
    return self.sign_now(version, alg, message)


FileBackend.signs_at_once = _never_at_once  # type: ignore[method-assign]
FileBackend.sign = _sign_inline  # type: ignore[method-assign]

if __name__ == "__main__":
    main()
