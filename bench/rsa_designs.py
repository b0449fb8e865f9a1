"""Where RSA signs (`tokens.rsa_signing`), measured side by side: "threads" (a pool of one thread
per core beside the event loop) and "loop" (queued on the event loop, one signature per loop
iteration), at 1 and 2 workers.

Each round measures, in alternation, the limit (the raw 2-thread RSA-4096 sign rate, no HTTP)
and keysvc with each design (both servers up throughout, the idle one costing nothing), the
order reversed every other round so that a drift of the machine's speed hits every side alike.
A keysvc measurement is RS256 issuance at saturation (wrk, RSA_CONNECTIONS connections) with,
on two extra connections, a JWKS GET and a `/healthz` every PROBE_INTERVAL_MS: their latency is
what a verifier and a health check see beside RSA issuance. The probes are paced, not flat
out, so they take the same sliver of CPU from both designs and throughput stays comparable.
"""

from __future__ import annotations

import statistics
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from bench import limits
from bench.load import LoadResult, write_script, wrk
from bench.procs import Server

if TYPE_CHECKING:
    from bench.run import Bench

DESIGNS = ("threads", "loop")
WORKERS = (1, 2)
ROUNDS = 4
SECONDS = 4.0
WARMUP = 1.0
PROBE_INTERVAL_MS = 10
PROBES = {"JWKS": "/.well-known/jwks", "/healthz": "/healthz"}
PROBE_NAMES = {"JWKS": "JWKS GET", "/healthz": "GET /healthz"}
MAX_ERROR_SHARE = 0.001
"""More failed token requests than this and a throughput goal fails (as in bench/report.py)."""
LATENCY_GOAL_MS = 10.0
RATIO_GOAL = 0.93


@dataclass
class Saturated:
    """One keysvc measurement: RS256 issuance and the probes beside it."""

    tokens: LoadResult
    probes: dict[str, LoadResult]


@dataclass
class DesignRound:
    limit: float
    """Raw 2-thread RSA-4096 signatures per second, measured in this round."""
    limit_cores: float = 0.0
    """The CPU the limit's signing threads got (2.0: both cores throughout)."""
    designs: dict[str, Saturated] = field(default_factory=dict)

    def ratio(self, design: str) -> float:
        return self.designs[design].tokens.rate / self.limit

    def per_core(self, design: str) -> float:
        """The same ratio per CPU second each side got: on a shared host a design that runs
        more threads takes more of the cores from other users, which flatters its throughput;
        this does not."""
        tokens = self.designs[design].tokens
        if not tokens.server_cpu_share or not self.limit_cores:
            return 0.0
        return (tokens.rate / tokens.server_cpu_share) / (self.limit / self.limit_cores)


@dataclass
class DesignResults:
    rounds: dict[int, list[DesignRound]] = field(default_factory=dict)
    """Workers → rounds."""
    default: str = ""
    """tokens.rsa_signing's default when measured."""
    connections: int = 16

    def median_ratio(self, workers: int, design: str) -> float:
        return statistics.median(r.ratio(design) for r in self.rounds[workers])

    def median_per_core(self, workers: int, design: str) -> float:
        return statistics.median(r.per_core(design) for r in self.rounds[workers])

    def latencies(self, workers: int, design: str, probe: str) -> tuple[float, float, float]:
        """(median p50, median p99, worst p99) in ms over the rounds."""
        found = [r.designs[design].probes[probe] for r in self.rounds[workers]]
        return (
            statistics.median(x.p50_ms for x in found),
            statistics.median(x.p99_ms for x in found),
            max(x.p99_ms for x in found),
        )


def probe_script(work: Path) -> Path:
    """A GET every PROBE_INTERVAL_MS on its connection (wrk's `delay()` hook)."""
    path = write_script(work / "probe.lua")
    path.write_text(f"function delay()\n  return {PROBE_INTERVAL_MS}\nend\n" + path.read_text())
    return path


def saturate(bench: Bench, server: Server, connections: int, probe: Path) -> Saturated:
    """RS256 issuance for SECONDS (after a WARMUP), and the paced probes meanwhile (starting
    half a second in and ending half a second before, so that every probe meets saturation)."""
    url = server.url
    wrk(url + "/v1/tokens", bench.post, seconds=WARMUP, connections=connections)
    found: dict[str, LoadResult] = {}
    errors: list[BaseException] = []

    def run(name: str, path: str) -> None:
        try:
            time.sleep(0.5)
            found[name] = wrk(url + path, probe, seconds=SECONDS - 1, threads=1, connections=1)
        except BaseException as exc:  # noqa: BLE001 (re-raised below, in the caller's thread)
            errors.append(exc)

    threads = [threading.Thread(target=run, args=item) for item in PROBES.items()]
    for thread in threads:
        thread.start()
    try:
        tokens = wrk(
            url + "/v1/tokens", bench.post, seconds=SECONDS, connections=connections, server=server.tree
        )
    finally:
        for thread in threads:
            thread.join()
    if errors:
        raise errors[0]
    return Saturated(tokens, found)


def measure(bench: Bench, log: Callable[[str], None], connections: int) -> DesignResults:
    from keysvc.config import DEFAULT_RSA_SIGNING

    fx = bench.fx
    results = DesignResults(default=DEFAULT_RSA_SIGNING, connections=connections)
    sign = limits.rs256(fx.rsa_key, fx.signing_inputs["RS256"])
    probe = probe_script(fx.work)
    for workers in WORKERS:
        servers = {d: bench.keysvc("RS256", workers, rsa_signing=d) for d in DESIGNS}
        try:
            for design, server in servers.items():
                server.start()
                bench.check_token(server, "RS256")
                # Discarded: a just-started server warms up (with workers > 1, readiness means
                # one worker ready, not all of them).
                wrk(server.url + "/v1/tokens", bench.post, seconds=bench.warmup, connections=connections)
            rounds: list[DesignRound] = []
            for number in range(ROUNDS):
                order: list[str | None] = [None, *DESIGNS]  # None: the limit
                if number % 2:
                    order.reverse()
                round_ = DesignRound(limit=0.0)
                for design in order:
                    if design is None:
                        round_.limit, round_.limit_cores = limits.sign_rate(sign, 2, SECONDS)
                    else:
                        round_.designs[design] = saturate(bench, servers[design], connections, probe)
                rounds.append(round_)
                log(f"RS256 designs, {workers} worker(s), round {number + 1}: " + describe(round_))
            results.rounds[workers] = rounds
        finally:
            for server in servers.values():
                server.stop()
    return results


def describe(round_: DesignRound) -> str:
    parts = [f"limit {round_.limit:,.0f}/s on {round_.limit_cores:.2f} cores"]
    for design, x in round_.designs.items():
        jwks, health = x.probes["JWKS"], x.probes["/healthz"]
        parts.append(
            f"{design} {x.tokens.rate:,.0f}/s = {round_.ratio(design):.2f}"
            f" (per core {round_.per_core(design):.2f}; server {x.tokens.server_cpu_share:.2f},"
            f" others {x.tokens.other_cpu_share:.2f} cores;"
            f" JWKS p50/p99 {jwks.p50_ms:.1f}/{jwks.p99_ms:.1f} ms,"
            f" /healthz {health.p50_ms:.1f}/{health.p99_ms:.1f} ms, errors {x.tokens.errors})"
        )
    return "; ".join(parts)


def _row(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def section(r: DesignResults) -> list[str]:
    """The markdown section of RESULTS.md (also what `bench/run.py --only rsa-signing` prints)."""
    if not r.rounds:
        return []
    lines = [
        "## Where RSA signs: `tokens.rsa_signing`",
        "",
        (
            f"RS256-4096 issuance at saturation ({r.connections} connections) with each design, "
            "in rounds alternating with the limit (the raw 2-thread sign rate), the order "
            f"reversed every other round; each measurement {WARMUP:g} s of warm-up and "
            f"{SECONDS:g} s measured, all servers up throughout. Beside the issuance, a JWKS GET "
            f"and a `/healthz` every {PROBE_INTERVAL_MS} ms, each on a connection of its own. "
            f"`threads`: a pool of one thread per core per worker; `loop`: queued on each "
            f"worker's event loop, one signature per loop iteration. The default is "
            f"`{r.default}`. Figures: tokens/s ÷ limit in the same round. `per core`: the same "
            "ratio per CPU second the server and the limit's threads got (median), steadier "
            "on a shared host, where a design running more threads also takes more CPU from "
            "other users; `server cores`, `others' cores`: CPU time ÷ wall time of keysvc's "
            "processes and of everything else during the runs (medians)."
        ),
        "",
        _row(
            ["workers", "design", *[f"round {i + 1}" for i in range(ROUNDS)], "median ratio",
             "per core", "server cores", "others' cores"]
        ),
        _row(["---"] * (ROUNDS + 6)),
    ]
    for workers, rounds in r.rounds.items():
        for design in DESIGNS:
            cells = [
                f"{x.designs[design].tokens.rate:,.0f} / {x.limit:,.0f} = {x.ratio(design):.2f}"
                for x in rounds
            ]
            tokens = [x.designs[design].tokens for x in rounds]
            lines.append(
                _row(
                    [
                        str(workers),
                        design,
                        *cells,
                        f"**{r.median_ratio(workers, design):.2f}**",
                        f"{r.median_per_core(workers, design):.2f}",
                        f"{statistics.median(t.server_cpu_share for t in tokens):.2f}",
                        f"{statistics.median(t.other_cpu_share for t in tokens):.2f}",
                    ]
                )
            )
    lines += [
        "",
        "Latency beside the saturation, in ms: the median over the rounds of each round's p50 and "
        "p99, and the worst round's p99. Token errors: non-2xx replies and socket errors over "
        "all rounds.",
        "",
        _row(["workers", "design", "JWKS p50", "JWKS p99 (worst)", "/healthz p50",
              "/healthz p99 (worst)", "token p50 / p99", "token errors"]),
        _row(["---"] * 8),
    ]
    for workers, rounds in r.rounds.items():
        for design in DESIGNS:
            cells = []
            for probe in PROBES:
                p50, p99, worst = r.latencies(workers, design, probe)
                cells += [f"{p50:.2f}", f"{p99:.2f} ({worst:.2f})"]
            tokens = [x.designs[design].tokens for x in rounds]
            token_p50 = statistics.median(t.p50_ms for t in tokens)
            token_p99 = statistics.median(t.p99_ms for t in tokens)
            errors = sum(t.errors for t in tokens)
            lines.append(
                _row([str(workers), design, *cells, f"{token_p50:.1f} / {token_p99:.1f}", str(errors)])
            )
    lines.append("")
    return lines


@dataclass(frozen=True)
class Goal:
    name: str
    figure: str
    limit: str
    ratio: float
    goal: str
    passed: bool


def goals(r: DesignResults) -> list[Goal]:
    """Issue 17's goals for the default design at 2 workers: RS256 ≥ RATIO_GOAL of the raw
    rate (paired median), and the JWKS GET and /healthz beside it at p99 ≤ LATENCY_GOAL_MS
    (the median round's p99)."""
    if 2 not in r.rounds:
        return []
    design = r.default
    ratio = r.median_ratio(2, design)
    limit = statistics.median(x.limit for x in r.rounds[2])
    tokens = statistics.median(x.designs[design].tokens.rate for x in r.rounds[2])
    runs = [x.designs[design].tokens for x in r.rounds[2]]
    valid = sum(t.errors for t in runs) <= MAX_ERROR_SHARE * max(sum(t.requests for t in runs), 1)
    out = [
        Goal(
            f"RS256-4096 issuance ≥ {RATIO_GOAL:.2f} of the raw 2-thread sign rate, paired, "
            f"2 workers (rsa_signing = {design})",
            f"{tokens:,.0f} tokens/s (median)",
            f"{limit:,.0f} signs/s (median)",
            ratio,
            f"≥ {RATIO_GOAL:.2f}",
            valid and ratio >= RATIO_GOAL,
        )
    ]
    for probe in PROBES:
        p50, p99, _ = r.latencies(2, design, probe)
        out.append(
            Goal(
                f"{PROBE_NAMES[probe]} beside RS256 saturation: p99 ≤ {LATENCY_GOAL_MS:g} ms, 2 workers "
                f"(rsa_signing = {design})",
                f"p99 {p99:.2f} ms",
                f"p50 {p50:.2f} ms",
                p99 / LATENCY_GOAL_MS,
                f"≤ 1.00 ({LATENCY_GOAL_MS:g} ms)",
                p99 <= LATENCY_GOAL_MS,
            )
        )
    return out
