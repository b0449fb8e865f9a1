"""Many key versions against one, in the same run (`make bench` runs it after the rest; alone:
`python bench/many_keys.py [--seconds S] [--rounds N]`).

- ES256 token rate and JWKS GET rate of `keysvc serve` with 100 published versions against the
  same service with 1 (goal: ≥ 0.95 of the 1-key figure), and how the JWKS grows. The signing
  key is the same EC P-256 key in both directories; the 100-version one adds 99 published keys
  (pending: created within the publish lead), so every request sees a 100-key ring and serves
  a 100-key JWKS. Measured as paired rounds (1 key, 100 keys; then 100, 1; ...) on servers that
  are both up, so a drift of the machine's speed hits both sides alike.
- The time from `keysvc serve` to ready (/readyz 200) with 100 RSA-4096 versions in the key
  directory against 1 (goal: under 2×): a directory that was never pruned. RSA private keys are
  checked when they first sign, not when listed (keysvc/backends/file.py, CheckedOnUse): the
  figure also shows what checking them all at start would cost.

The 100 RSA-4096 keys take a minute or two to generate, so they are kept in bench/.cache/ and
reused by later runs.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.load import LoadResult, wrk, write_script  # noqa: E402
from bench.procs import Server, free_port  # noqa: E402
from keysvc import keygen  # noqa: E402
from keysvc.backends.file import load_private_key, name_for  # noqa: E402
from keysvc.secrets import write_private_file  # noqa: E402
from tests.service import RUN  # noqa: E402

WORK = ROOT / "bench" / ".work-many-keys"
CACHE = ROOT / "bench" / ".cache"
VERSIONS = 100
GOAL_RATE = 0.95
GOAL_READY = 2.0


@dataclass
class ManyKeysResults:
    token: list[tuple[float, float]] = field(default_factory=list)
    """Paired rounds: (1 key, 100 keys) ES256 tokens/s."""
    jwks: list[tuple[float, float]] = field(default_factory=list)
    """Paired rounds: (1 key, 100 keys) JWKS GETs/s."""
    jwks_bytes: tuple[int, int] = (0, 0)
    bare_jwks: list[tuple[float, float]] = field(default_factory=list)
    """Paired rounds: the bare aiohttp app serving the same 1-key and 100-key JWKS bytes, GETs/s:
    what the bytes alone cost, keysvc aside."""
    ready: list[tuple[float, float]] = field(default_factory=list)
    """Paired rounds: (1 key, 100 keys) seconds from `keysvc serve` to /readyz 200."""
    check_seconds: float = 0.0
    """What checking one RSA-4096 private key costs (cryptography's load with its checks)."""
    errors: int = 0

    @staticmethod
    def ratio(pairs: list[tuple[float, float]]) -> float:
        return statistics.median(many / one for one, many in pairs)


def _token_file(work: Path) -> tuple[str, Path]:
    token = "many-keys-bench-token"
    path = work / "client-token"
    write_private_file(path, (token + "\n").encode())
    return token, path


def _ec_dirs(work: Path) -> tuple[Path, Path]:
    """Two key directories with the same signing key, one with 99 pending keys beside it."""
    now = datetime.now(UTC)
    signing = keygen.private_pem(keygen.generate("ec-p256"))
    one, many = work / "ec-1", work / "ec-100"
    for directory in (one, many):
        directory.mkdir(mode=0o700)
        write_private_file(directory / name_for(now - timedelta(days=2)), signing)
    step = timedelta(hours=23) / (VERSIONS - 1)
    for index in range(1, VERSIONS):  # pending: created within the 24h publish lead
        pem = keygen.private_pem(keygen.generate("ec-p256"))
        write_private_file(many / name_for(now - index * step), pem)
    return one, many


def _rsa_keys(log: Callable[[str], None]) -> list[bytes]:
    """VERSIONS RSA-4096 private keys, generated once and kept in bench/.cache/."""
    cache = CACHE / "rsa-4096"
    cache.mkdir(parents=True, mode=0o700, exist_ok=True)
    have = sorted(cache.glob("*.pem"))
    if len(have) < VERSIONS:
        log(f"generating {VERSIONS - len(have)} RSA-4096 keys into {cache} (once)")
    for index in range(len(have), VERSIONS):
        write_private_file(cache / f"{index:03d}.pem", keygen.private_pem(keygen.generate("rsa-4096")))
    return [p.read_bytes() for p in sorted(cache.glob("*.pem"))[:VERSIONS]]


def _rsa_dirs(work: Path, keys: list[bytes]) -> tuple[Path, Path]:
    """1 RSA-4096 version, and 100: the signing one and 99 older ones (a never-pruned directory)."""
    now = datetime.now(UTC)
    one, many = work / "rsa-1", work / "rsa-100"
    for directory in (one, many):
        directory.mkdir(mode=0o700)
        write_private_file(directory / name_for(now - timedelta(days=2)), keys[0])
    for index, pem in enumerate(keys[1:], start=1):
        write_private_file(many / name_for(now - timedelta(days=2 + index)), pem)
    return one, many


def _serve(directory: Path, token_file: Path, port: int, work: Path) -> list[str]:
    return [
        sys.executable, "-m", "keysvc", "serve", "--issuer", "http://127.0.0.1:8080",
        "--private-key-path", str(directory), "--client-token-file", str(token_file),
        "--listen", f"127.0.0.1:{port}",
    ]


def _server(name: str, directory: Path, token_file: Path, work: Path) -> Server:
    port = free_port()
    return Server(name, _serve(directory, token_file, port, work), port, "/readyz",
                  work / f"{name}.log")


def _bare(name: str, server: Server, work: Path) -> Server:
    """bench/bare_app.py serving exactly the JWKS bytes and headers `server` serves."""
    with urllib.request.urlopen(server.url + "/.well-known/jwks", timeout=5) as reply:
        body, headers = reply.read(), reply.headers
    jwks = work / f"{name}.json"
    jwks.write_bytes(body)
    port = free_port()
    command = [sys.executable, str(ROOT / "bench" / "bare_app.py"), "--port", str(port),
               "--jwks", str(jwks), "--etag", headers["ETag"],
               "--cache-control", headers["Cache-Control"], "--token-length", "600"]
    return Server(name, command, port, "/.well-known/jwks", work / f"{name}.log")


def _ready_seconds(command: list[str], url: str, log: Path, timeout: float = 300) -> float:
    """Seconds from starting `keysvc serve` to its first /readyz 200 (then stopped)."""
    started = time.monotonic()
    with open(log, "wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
    try:
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"keysvc exited at start: see {log}")
            try:
                with urllib.request.urlopen(url + "/readyz", timeout=1) as reply:
                    if reply.status == 200:
                        return time.monotonic() - started
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            if time.monotonic() - started > timeout:
                raise RuntimeError(f"keysvc not ready after {timeout:g}s: see {log}")
            time.sleep(0.01)
    finally:
        process.terminate()
        process.wait(30)


def measure(
    log: Callable[[str], None], seconds: float = 4.0, rounds: int = 4, warmup: float = 1.0
) -> ManyKeysResults:
    if WORK.exists():
        import shutil

        shutil.rmtree(WORK)
    WORK.mkdir(parents=True, mode=0o700)
    results = ManyKeysResults()
    token, token_file = _token_file(WORK)
    post = write_script(WORK / "post.lua", body=json.dumps(RUN).encode(), token=token)
    get = write_script(WORK / "get.lua")

    log("many keys: 1 and 100 published ES256 versions")
    ec_one, ec_many = _ec_dirs(WORK)
    with _server("ec-1", ec_one, token_file, WORK) as one, \
            _server("ec-100", ec_many, token_file, WORK) as many, \
            _bare("bare-1", one, WORK) as bare_one, _bare("bare-100", many, WORK) as bare_many:
        results.jwks_bytes = (len(one.get("/.well-known/jwks")), len(many.get("/.well-known/jwks")))
        assert bare_many.get("/.well-known/jwks") == many.get("/.well-known/jwks")
        for kind, path, script, (low, high) in (
            ("token", "/v1/tokens", post, (one, many)),
            ("jwks", "/.well-known/jwks", get, (one, many)),
            ("bare_jwks", "/.well-known/jwks", get, (bare_one, bare_many)),
        ):
            pairs = getattr(results, kind)

            def rate(server: Server) -> float:
                wrk(server.url + path, script, seconds=warmup, connections=64)
                result: LoadResult = wrk(server.url + path, script, seconds=seconds,
                                         connections=64, server=server.tree)
                results.errors += result.errors
                return result.rate

            for round_ in range(rounds):
                if round_ % 2 == 0:
                    first = rate(low)
                    pairs.append((first, rate(high)))
                else:
                    first = rate(high)
                    pairs.append((rate(low), first))
            log(f"many keys, {kind}: ratios "
                + ", ".join(f"{m / o:.2f}" for o, m in pairs))

    log("many keys: serve to ready, 1 and 100 RSA-4096 versions")
    rsa_keys = _rsa_keys(log)
    rsa_one, rsa_many = _rsa_dirs(WORK, rsa_keys)
    for round_ in range(max(2, rounds - 1)):
        times = []
        for directory in ((rsa_one, rsa_many) if round_ % 2 == 0 else (rsa_many, rsa_one)):
            port = free_port()
            times.append((directory, _ready_seconds(
                _serve(directory, token_file, port, WORK), f"http://127.0.0.1:{port}",
                WORK / f"ready-{directory.name}.log")))
        by_dir = dict(times)
        results.ready.append((by_dir[rsa_one], by_dir[rsa_many]))
        log(f"many keys, ready: 1 version {by_dir[rsa_one]:.2f}s, 100: {by_dir[rsa_many]:.2f}s")
    started = time.perf_counter()
    for pem in rsa_keys[:3]:
        load_private_key(Path("check"), pem)
    results.check_seconds = (time.perf_counter() - started) / 3
    return results


def markdown(results: ManyKeysResults) -> str:
    token, jwks, ready = (results.ratio(p) for p in (results.token, results.jwks, results.ready))
    one_bytes, many_bytes = results.jwks_bytes

    def verdict(ok: bool) -> str:
        return "PASS" if ok else "FAIL"

    def medians(pairs: list[tuple[float, float]], digits: int = 0) -> str:
        one = statistics.median(o for o, _ in pairs)
        many = statistics.median(m for _, m in pairs)
        return f"{one:,.{digits}f} | {many:,.{digits}f}"

    def rounds(name: str, pairs: list[tuple[float, float]], digits: int = 0) -> str:
        return f"- {name}: " + "; ".join(
            f"{o:,.{digits}f} / {m:,.{digits}f} = {m / o:.2f}" for o, m in pairs)

    median_one = statistics.median(o for o, _ in results.ready)
    return "\n".join([
        "## 100 key versions against 1 (bench/many_keys.py)",
        "",
        "Paired rounds with both servers up at once, 1 worker each; the ratio is the median of"
        f" the rounds' 100-version / 1-version figures. Errors: {results.errors}.",
        "",
        "| scenario | 1 version (median) | 100 versions (median) | ratio (median of rounds) | goal |",
        "|---|---|---|---|---|",
        f"| ES256 tokens/s | {medians(results.token)} | **{token:.2f}** | ≥ {GOAL_RATE}"
        f" {verdict(token >= GOAL_RATE)} |",
        f"| JWKS GETs/s | {medians(results.jwks)} | **{jwks:.2f}** | ≥ {GOAL_RATE}"
        f" {verdict(jwks >= GOAL_RATE)} |",
        f"| bare aiohttp app, same JWKS bytes, GETs/s | {medians(results.bare_jwks)} |"
        f" {results.ratio(results.bare_jwks):.2f} | (the bytes' own cost) |",
        f"| JWKS bytes | {one_bytes:,} | {many_bytes:,} | {many_bytes / one_bytes:.0f}×"
        f" (+{(many_bytes - one_bytes) / (VERSIONS - 1):.0f} B per key) | |",
        f"| `keysvc serve` to ready, RSA-4096, s | {medians(results.ready, 2)} | **{ready:.2f}** |"
        f" < {GOAL_READY} {verdict(ready < GOAL_READY)} |",
        "",
        "Rounds (1 version / 100 versions):",
        rounds("ES256 tokens/s", results.token),
        rounds("JWKS GETs/s", results.jwks),
        rounds("bare app, same JWKS bytes, GETs/s", results.bare_jwks),
        rounds("serve to ready, s", results.ready, 2),
        "",
        f"Checking one RSA-4096 private key costs {results.check_seconds:.2f} s here: checking"
        f" all 100 at start would add about {VERSIONS * results.check_seconds:.0f} s to the"
        f" {median_one:.2f} s a 1-version directory takes; keysvc checks a key when it first"
        " signs (keysvc/backends/file.py, CheckedOnUse).",
    ])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--rounds", type=int, default=4)
    args = parser.parse_args()
    began = time.monotonic()

    def log(message: str) -> None:
        print(f"[{time.monotonic() - began:5.0f}s] {message}", file=sys.stderr, flush=True)

    print(markdown(measure(log, args.seconds, args.rounds)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
