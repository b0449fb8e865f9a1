"""`make bench`: measure the limits, then keysvc, in one run on the same cores, and write
bench/RESULTS.md.

Order: raw signing rates (cryptography in 1 and 2 threads, `openssl speed` for reference), the
bare aiohttp ceilings (1 and 2 processes) and the signing floors, then keysvc as a real
`keysvc serve` subprocess (ES256 and RS256-4096 key directories, 1 and 2 workers), then the
limits once more, then keysvc's figure for each throughput target once more (ratios use each
side's higher value), then paired rounds of each target, of the two `tokens.rsa_signing` designs
(bench/rsa_designs.py) and of OTF's runner endpoint, then 100 key versions against 1
(bench/many_keys.py). Every server listens on 127.0.0.1 and is stopped when done with, also on
failure or Ctrl-C. Takes about eleven minutes (a minute or two more the first time, to generate
bench/many_keys.py's RSA-4096 keys into bench/.cache/), plus bench/vault_batch.py when present.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import os
import pickle
import platform
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import limits, many_keys, report, rsa_designs
from bench.fixtures import Fixtures, prepare
from bench.load import LoadResult, write_script, wrk
from bench.procs import Server, free_port
from keysvc import keygen
from keysvc.secrets import write_private_file

WORK = ROOT / "bench" / ".work"
FLOORS = (("ES256", 1), ("ES256", 2), ("RS256", 1))
"""The signing floors measured: (algorithm, processes). RS256 at one process, as keysvc's
best RS256 setting: its signing threads already use both cores."""
RESULTS = ROOT / "bench" / "RESULTS.md"
SAVED = WORK / "results.pickle"
VAULT_SCRIPT = ROOT / "bench" / "vault_batch.py"
VAULT_TIMEOUT = 300
RSA_CONNECTIONS = 16
"""Enough to keep every signing thread of 2 workers busy with a queue behind them; 64 would
only lengthen the queue (at ~200 tokens/s, p50 ≈ connections ÷ rate)."""
PACKAGES = (
    "keysvc",
    "aiohttp",
    "uvloop",
    "cryptography",
    "pydantic",
    "pydantic-core",
    "prometheus-client",
)


def connections(alg: str) -> int:
    """Connections for loading token issuance with keys of `alg`."""
    return RSA_CONNECTIONS if alg == "RS256" else 64


class Bench:
    def __init__(self, fixtures: Fixtures, seconds: float, warmup: float) -> None:
        self.fx = fixtures
        self.seconds = seconds
        self.warmup = warmup
        self.post = write_script(
            fixtures.work / "post.lua", body=fixtures.body, token=fixtures.token
        )
        self.get = write_script(fixtures.work / "get.lua")

    def load(
        self,
        server: Server,
        path: str,
        script: Path,
        *,
        connections: int = 64,
        threads: int = 2,
        seconds: float | None = None,
        warmup: float | None = None,
    ) -> LoadResult:
        """A warm-up run (discarded), then the measured one."""
        url = server.url + path
        wrk(url, script, seconds=warmup or self.warmup, threads=threads, connections=connections)
        return wrk(
            url,
            script,
            seconds=seconds or self.seconds,
            threads=threads,
            connections=connections,
            server=server.tree,
        )

    def target(self, kind: str) -> tuple[str, str, Path, int]:
        """What a throughput target ("RS256", "ES256", "JWKS") loads: keysvc's key algorithm,
        the path, the wrk script and the connections."""
        if kind == "JWKS":
            return "ES256", "/.well-known/jwks", self.get, 64
        return kind, "/v1/tokens", self.post, connections(kind)

    def unloaded(self, server: Server, path: str, script: Path) -> LoadResult:
        return self.load(
            server, path, script, connections=1, threads=1, seconds=max(3.0, self.seconds / 2)
        )

    def bare(self, processes: int, sign: str | None = None) -> Server:
        """The bare app; with `sign` ("ES256" | "RS256") the signing floor: the same app
        signing keysvc's real signing input with the same key for every POST."""
        jwks = self.fx.work / "jwks.json"
        jwks.write_bytes(self.fx.jwks_body)
        port = free_port()
        command = [
            sys.executable,
            str(ROOT / "bench" / "bare_app.py"),
            "--port",
            str(port),
            "--processes",
            str(processes),
            "--jwks",
            str(jwks),
            "--etag",
            self.fx.jwks_etag,
            "--cache-control",
            self.fx.jwks_cache_control,
            "--token-length",
            str(self.fx.token_length),
        ]
        name = f"bare app ({processes} proc)"
        if sign is not None:
            key = self.fx.rsa_key if sign == "RS256" else self.fx.ec_key
            key_path = self.fx.work / f"floor-{sign}.pem"
            if not key_path.exists():
                write_private_file(key_path, keygen.private_pem(key))
            message = self.fx.work / f"signing-input-{sign}"
            message.write_bytes(self.fx.signing_inputs[sign])
            command += ["--sign-key", str(key_path), "--signing-input", str(message)]
            name = f"signing floor {sign} ({processes} proc)"
        log = self.fx.work / f"{name.split(' (')[0].replace(' ', '-')}-{processes}.log"
        return Server(name, command, port, "/.well-known/jwks", log)

    def keysvc(self, alg: str, workers: int, rsa_signing: str | None = None) -> Server:
        """`keysvc serve` on the key directory of `alg`; with `rsa_signing`, a config file
        setting `tokens.rsa_signing` (by default the setting's default)."""
        port = free_port()
        command = [sys.executable, "-m", "keysvc", *self.fx.serve_args(alg, port, workers)]
        name = f"keysvc-{alg}-{workers}"
        if rsa_signing is not None:
            config = self.fx.work / f"rsa-signing-{rsa_signing}.toml"
            config.write_text(f'[tokens]\nrsa_signing = "{rsa_signing}"\n')
            command += ["--config", str(config)]
            name += f"-{rsa_signing}"
        log = self.fx.work / f"{name}.log"
        return Server(f"keysvc {alg} ({workers} worker)", command, port, "/readyz", log)

    def otfd(self) -> Server:
        """The fake otfd (bench/otfd.py) with one running job; its id and job token are in
        `self.fx.work / "otf-job.json"` once it answers."""
        port = free_port()
        command = [
            sys.executable,
            str(ROOT / "bench" / "otfd.py"),
            "--port",
            str(port),
            "--job-file",
            str(self.fx.work / "otf-job.json"),
        ]
        return Server("fake otfd", command, port, "/healthz", self.fx.work / "otfd.log")

    def keysvc_otf(self, otfd_url: str, workers: int, workspace_cache: str = "30s") -> Server:
        """keysvc ES256 as `keysvc()`, plus an [otf] table pointing at `otfd_url`."""
        config = self.fx.work / f"otf-{workspace_cache}.toml"
        config.write_text(
            f'[otf]\nurl = "{otfd_url}"\ntimeout = "10s"\nworkspace_cache = "{workspace_cache}"\n'
        )
        port = free_port()
        serve = [*self.fx.serve_args("ES256", port, workers), "--config", str(config)]
        log = self.fx.work / f"keysvc-otf-{workers}-{workspace_cache}.log"
        command = [sys.executable, "-m", "keysvc", *serve]
        return Server(f"keysvc OTF ({workers} worker)", command, port, "/readyz", log)

    def check_token(self, server: Server, alg: str) -> None:
        """One real token before measuring: signed by the expected key, and verifiable."""
        import urllib.request

        from keysvc import jose

        request = urllib.request.Request(
            server.url + "/v1/tokens",
            data=self.fx.body,
            method="POST",
            headers={
                "Content-Type": "application/json",
                "Authorization": f"Bearer {self.fx.token}",
            },
        )
        with urllib.request.urlopen(request, timeout=30) as reply:
            token = json.loads(reply.read())["token"]
        header_b64, payload_b64, signature_b64 = token.split(".")
        header = json.loads(base64.urlsafe_b64decode(header_b64 + "=="))
        if header["alg"] != alg:
            raise RuntimeError(f"{server.name} signed with {header['alg']}, expected {alg}")
        key = self.fx.rsa_key if alg == "RS256" else self.fx.ec_key
        jose.verify_local(
            key.public_key(),
            jose.Algorithm(alg),
            f"{header_b64}.{payload_b64}".encode(),
            jose.b64url_decode(signature_b64),
        )
        if alg == "ES256" and server.get("/.well-known/jwks") != self.fx.jwks_body:
            raise RuntimeError("keysvc serves other JWKS bytes than the bare app")


def environment() -> dict[str, str]:
    def version(name: str) -> str:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            return "not installed"

    def first_line(command: list[str]) -> str:
        try:
            out = subprocess.run(command, capture_output=True, text=True, timeout=10, check=False)
            return (out.stdout or out.stderr).strip().splitlines()[0]
        except (OSError, IndexError, subprocess.SubprocessError):
            return "n/a"

    model = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    commit = first_line(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"])
    dirty = first_line(["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"])
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"nproc {os.cpu_count()}, {model}, {platform.system()} {platform.release()}",
        "load average at start": " ".join(f"{x:.2f}" for x in os.getloadavg()),
        "python": platform.python_version(),
        "packages": ", ".join(f"{p} {version(p)}" for p in PACKAGES),
        "wrk": first_line(["wrk", "-v"]),
        "openssl": first_line(["openssl", "version"]),
        "keysvc commit": commit
        + (" (with uncommitted changes)" if dirty not in ("", "n/a") else ""),
    }


def vault_section() -> str | None:
    """bench/vault_batch.py's markdown (it is another engineer's; absent until merged)."""
    if not VAULT_SCRIPT.exists():
        return None
    heading = "## Vault backend (bench/vault_batch.py)"
    proc = subprocess.Popen(
        [sys.executable, str(VAULT_SCRIPT)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=VAULT_TIMEOUT)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # its own group: it and the servers it started
        proc.communicate()
        return f"{heading}\n\nDid not finish within {VAULT_TIMEOUT} s: no figures."
    except BaseException:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        raise
    if proc.returncode != 0 or not out.strip():
        tail = "\n".join(err.strip().splitlines()[-10:])
        return f"{heading}\n\nExited with status {proc.returncode}: no figures.\n\n```\n{tail}\n```"
    out = out.strip()
    return out if out.startswith("#") else f"{heading}\n\n{out}"


def measure_limits(
    bench: Bench, results: report.Results, log: Callable[[str], None], when: str
) -> None:
    """Signing rates and the bare framework ceilings. Before keysvc: everything; after it
    (a second look, in case the first met someone else's burst of load): 2 threads and the
    loaded runs only."""
    fx = bench.fx
    first = when == "before"
    for alg, sign, seconds in (
        ("RS256", limits.rs256(fx.rsa_key, fx.signing_inputs["RS256"]), 4.0),
        ("ES256", limits.es256(fx.ec_key, fx.signing_inputs["ES256"]), 3.0),
    ):
        for threads in (1, 2) if first else (2,):
            rate, cpu = limits.sign_rate(sign, threads, seconds if threads == 2 else seconds - 1)
            rate_ = limits.SignRate(alg, threads, rate, len(fx.signing_inputs[alg]), cpu)
            results.sign.append((when, rate_))
            log(f"raw {alg}, {threads} thread(s): {rate:,.0f} signs/s on {cpu:.2f} cores")
    if first:
        results.openssl = limits.openssl_speed(results.openssl_processes)
        log(f"openssl speed -multi {results.openssl_processes}: {results.openssl}")
    for processes in (1, 2):
        with bench.bare(processes) as server:
            post = bench.load(server, "/v1/tokens", bench.post)
            get = bench.load(server, "/.well-known/jwks", bench.get)
            results.bare[("POST", processes, when)] = post
            results.bare[("GET", processes, when)] = get
            if first and processes == 1:
                results.unloaded["bare POST"] = bench.unloaded(server, "/v1/tokens", bench.post)
                results.unloaded["bare GET JWKS"] = bench.unloaded(
                    server, "/.well-known/jwks", bench.get
                )
        log(f"bare, {processes} proc: POST {post.rate:,.0f}/s, GET {get.rate:,.0f}/s")
    for alg, processes in FLOORS:
        with bench.bare(processes, sign=alg) as server:
            bench.check_token(server, alg)
            floor = bench.load(
                server,
                "/v1/tokens",
                bench.post,
                connections=connections(alg),
            )
        results.floor[(alg, processes, when)] = floor
        log(f"signing floor {alg}, {processes} proc: {floor.rate:,.0f}/s")


def measure_keysvc(bench: Bench, results: report.Results, log: Callable[[str], None]) -> None:
    for alg in ("ES256", "RS256"):
        for workers in (1, 2):
            with bench.keysvc(alg, workers) as server:
                bench.check_token(server, alg)
                results.keysvc[(alg, workers)] = bench.load(
                    server,
                    "/v1/tokens",
                    bench.post,
                    connections=connections(alg),
                )
                if alg == "ES256":
                    results.keysvc[("JWKS", workers)] = bench.load(
                        server, "/.well-known/jwks", bench.get
                    )
                if workers == 1:
                    results.unloaded[f"keysvc {alg} token"] = bench.unloaded(
                        server, "/v1/tokens", bench.post
                    )
                    if alg == "ES256":
                        results.unloaded["keysvc JWKS"] = bench.unloaded(
                            server, "/.well-known/jwks", bench.get
                        )
                    else:
                        results.probe = probe_event_loop(bench, server)
            x = results.keysvc[(alg, workers)]
            log(
                f"keysvc {alg}, {workers} worker(s): {x.rate:,.0f}/s, p50 {x.p50_ms:.1f} ms, "
                f"p99 {x.p99_ms:.1f} ms, errors {x.errors}"
            )


def measure_keysvc_again(bench: Bench, results: report.Results, log: Callable[[str], None]) -> None:
    """Each throughput target's figure once more, at its best worker setting: the limits get two
    chances to miss someone else's burst of load, and so does keysvc."""
    for kind in ("RS256", "ES256", "JWKS"):
        alg, path, script, conns = bench.target(kind)
        workers = results.best(kind)
        with bench.keysvc(alg, workers) as server:
            x = bench.load(server, path, script, connections=conns)
        results.keysvc_repeat[(kind, workers)] = x
        log(f"keysvc {kind} again, {workers} worker(s): {x.rate:,.0f}/s")


PAIRED_ROUNDS = 4
PAIRED_SECONDS = 4.0


def alternate(
    limit: Callable[[], float], mine: Callable[[], float]
) -> list[tuple[float, float]]:
    """PAIRED_ROUNDS rounds of (limit, mine), measured in the order L M, M L, L M, M L so a drift
    of the machine's speed hits both sides alike."""
    pairs = []
    for round_ in range(PAIRED_ROUNDS):
        if round_ % 2 == 0:
            first = limit()
            pairs.append((first, mine()))
        else:
            first = mine()
            pairs.append((limit(), first))
    return pairs
OTF_AUDIENCE = b'{"audience":"aws.workload.identity"}'


def measure_otf(bench: Bench, results: report.Results, log: Callable[[str], None]) -> None:
    """OTF's runner endpoint: ES256 tokens through POST /otfapi/jobs/{id}/dynamic-credentials,
    as OTF's agents send it, with the fake otfd (its own process) answering keysvc's lookups on
    loopback; against /v1/tokens on the same keysvc, in alternating rounds. Twice: as configured
    by default (one job asking again and again: the job looked up for every token, its
    workspace once, as for a phase's second and later tokens), and with `workspace_cache = "0s"`
    (two lookups per token, as for a phase's first token)."""
    fx = bench.fx
    with bench.otfd() as otfd:
        job = json.loads((fx.work / "otf-job.json").read_text())
        path = f"/otfapi/jobs/{job['job_id']}/dynamic-credentials"
        script = write_script(
            fx.work / "otf.lua",
            body=OTF_AUDIENCE,
            token=job["token"],
            content_type="application/vnd.api+json",
        )
        workers = 1
        for cache in ("30s", "0s"):
            with bench.keysvc_otf(otfd.url, workers, cache) as server:
                check_otf_token(server, path, job["token"])
                if cache == "30s":
                    results.otf_load = bench.load(server, path, script)

                def v1() -> float:
                    return bench.load(
                        server, "/v1/tokens", bench.post, seconds=PAIRED_SECONDS, warmup=1
                    ).rate

                def otf() -> float:
                    return bench.load(server, path, script, seconds=PAIRED_SECONDS, warmup=1).rate

                pairs = alternate(v1, otf)
            if cache == "30s":
                results.otf = (workers, pairs)
            else:
                results.otf_uncached = pairs
            log(
                f"OTF runner endpoint, workspace_cache {cache}: paired with /v1/tokens: "
                + ", ".join(f"{k:,.0f}/{v:,.0f} = {k / v:.2f}" for v, k in pairs)
            )


def check_otf_token(server: Server, path: str, job_token: str) -> None:
    """One real token through the endpoint before measuring: 200 and a compact JWT."""
    import urllib.request

    request = urllib.request.Request(
        server.url + path,
        data=OTF_AUDIENCE,
        method="POST",
        headers={
            "Content-Type": "application/vnd.api+json",
            "Authorization": f"Bearer {job_token}",
        },
    )
    with urllib.request.urlopen(request, timeout=30) as reply:
        token = reply.read().decode()
    if token.count(".") != 2:
        raise RuntimeError(f"{server.name} answered no JWT: {token[:80]!r}")


def measure_paired(bench: Bench, results: report.Results, log: Callable[[str], None]) -> None:
    """Each throughput target once more as alternating short rounds of its limit and keysvc
    (best worker setting), both servers up at once (an idle server costs nothing), in the order
    L K, K L, L K, K L so a drift of the machine's speed hits both sides alike. On a host
    whose speed moves by ±25 % within minutes, the median of these paired ratios is the
    steadier estimate; RESULTS.md shows it beside the ratio that decides the target."""
    fx = bench.fx
    for kind in ("RS256", "ES256", "JWKS"):
        workers = results.best(kind)
        alg, path, script, conns = bench.target(kind)
        with contextlib.ExitStack() as stack:
            mine = stack.enter_context(bench.keysvc(alg, workers))
            if kind == "RS256":
                sign = limits.rs256(fx.rsa_key, fx.signing_inputs["RS256"])

                def limit() -> float:
                    return limits.sign_rate(sign, 2, PAIRED_SECONDS)[0]
            else:
                bare = stack.enter_context(bench.bare(workers))

                def limit() -> float:
                    return bench.load(bare, path, script, seconds=PAIRED_SECONDS, warmup=1).rate

            def keysvc() -> float:
                return bench.load(
                    mine, path, script, connections=conns, seconds=PAIRED_SECONDS, warmup=1
                ).rate

            # Discarded: a just-started server warms up (with workers > 1, readiness means
            # one worker ready, not all of them).
            bench.load(mine, path, script, connections=conns, seconds=bench.warmup)
            pairs = alternate(limit, keysvc)
        results.paired[kind] = (workers, pairs)
        log(f"paired {kind}, {workers} worker(s): ratios " + ", ".join(f"{k / l:.2f}" for l, k in pairs))


def measure(bench: Bench, results: report.Results, log: Callable[[str], None]) -> None:
    """Limits first, then keysvc, then the limits once more and keysvc's target figures once
    more, all on the same cores."""
    measure_limits(bench, results, log, "before")
    measure_keysvc(bench, results, log)
    measure_limits(bench, results, log, "after")
    measure_keysvc_again(bench, results, log)
    measure_paired(bench, results, log)
    results.rsa_designs = rsa_designs.measure(bench, log, RSA_CONNECTIONS)
    measure_otf(bench, results, log)


def probe_event_loop(bench: Bench, server: Server) -> tuple[LoadResult, LoadResult]:
    """RS256 saturation and, alongside, one connection fetching the JWKS."""
    found: dict[str, LoadResult] = {}
    errors: list[BaseException] = []

    def run_probe() -> None:
        try:
            found["probe"] = wrk(
                server.url + "/.well-known/jwks",
                bench.get,
                seconds=bench.seconds - 2,
                threads=1,
                connections=1,
            )
        except BaseException as exc:  # noqa: BLE001 (re-raised by the caller's thread)
            errors.append(exc)

    thread = threading.Thread(target=run_probe)
    thread.start()
    try:
        load = wrk(
            server.url + "/v1/tokens",
            bench.post,
            seconds=bench.seconds,
            threads=2,
            connections=RSA_CONNECTIONS,
            server=server.tree,
        )
    finally:
        thread.join()
    if errors:
        raise errors[0]
    return load, found["probe"]


def main() -> int:
    parser = argparse.ArgumentParser(description="keysvc benchmark (writes bench/RESULTS.md)")
    parser.add_argument("--seconds", type=float, default=8.0, help="length of each measured run")
    parser.add_argument("--warmup", type=float, default=2.0, help="discarded run before each")
    parser.add_argument("--output", type=Path, default=RESULTS)
    parser.add_argument(
        "--rerender",
        action="store_true",
        help="only rewrite the output from the last run's saved figures",
    )
    parser.add_argument(
        "--only",
        choices=["otf", "rsa-signing"],
        help="measure one scenario and print it; RESULTS.md is left as it is",
    )
    args = parser.parse_args()
    if args.rerender:
        args.output.write_text(report.render(pickle.loads(SAVED.read_bytes())))
        return 0
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # unwinds: every server is stopped

    began = time.monotonic()

    def log(message: str) -> None:
        print(f"[{time.monotonic() - began:5.0f}s] {message}", file=sys.stderr, flush=True)

    results = report.Results(environment=environment(), rsa_connections=RSA_CONNECTIONS)
    log("preparing keys and inputs")
    fixtures = prepare(WORK)
    results.signing_input_bytes = len(fixtures.signing_inputs["ES256"])
    results.jwks_bytes = len(fixtures.jwks_body)
    bench = Bench(fixtures, args.seconds, args.warmup)
    if args.only == "otf":
        measure_otf(bench, results, log)
        log(f"median paired ratio (OTF ÷ /v1/tokens), default: {results.otf_ratio():.2f}")
        log(f"median paired ratio, workspace_cache 0s: {results.otf_ratio(uncached=True):.2f}")
        return 0
    if args.only == "rsa-signing":
        designs = rsa_designs.measure(bench, log, RSA_CONNECTIONS)
        loads = " ".join(f"{x:.2f}" for x in os.getloadavg())
        print(f"load average at start: {results.environment['load average at start']}")
        print(f"load average at end: {loads}\n")
        print("\n".join(rsa_designs.section(designs)))
        for goal in rsa_designs.goals(designs):
            print(f"{'PASS' if goal.passed else 'FAIL'}  {goal.name}: {goal.figure} ({goal.limit})")
        return 0
    try:
        measure(bench, results, log)
    except Exception as exc:  # noqa: BLE001 (any failure: say so, keep RESULTS.md as it was)
        log(f"benchmark failed: {exc}")
        log(f"server logs are in {WORK}; {args.output} was not changed")
        return 1
    vault = vault_section()
    if vault is not None:
        results.appendix.append(vault)
    try:
        results.appendix.append(many_keys.markdown(many_keys.measure(log)))
    except Exception as exc:  # noqa: BLE001 (the section says so; the rest still stands)
        results.appendix.append(f"## 100 key versions against 1\n\nFailed: {exc}")
    results.environment["load average at end"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    results.environment["duration"] = f"{time.monotonic() - began:.0f} s"
    SAVED.write_bytes(pickle.dumps(results))
    args.output.write_text(report.render(results))
    log(f"wrote {args.output}")
    for target in report.targets(results):
        log(f"{'PASS' if target.passed else 'FAIL'}  {target.name}: ratio {target.ratio:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
