"""bench/RESULTS.md: each keysvc figure next to the limit measured in the same run, the ratio,
and the issue's targets marked PASS or FAIL."""

from __future__ import annotations

from dataclasses import dataclass, field

from bench.limits import SignRate
from bench.load import LoadResult

MAX_ERROR_SHARE = 0.001
"""A run with more failed requests than this is not a valid figure (its target fails)."""


@dataclass
class Results:
    environment: dict[str, str]
    sign: list[SignRate] = field(default_factory=list)
    openssl: dict[str, float] = field(default_factory=dict)
    openssl_processes: int = 2
    bare: dict[tuple[str, int], LoadResult] = field(default_factory=dict)
    """(endpoint "POST" | "GET", processes) → result under load."""
    keysvc: dict[tuple[str, int], LoadResult] = field(default_factory=dict)
    """("RS256" | "ES256" | "JWKS", workers) → result under load."""
    unloaded: dict[str, LoadResult] = field(default_factory=dict)
    """"bare POST", "bare GET", "ES256", "RS256", "JWKS" → one connection, one worker."""
    probe: tuple[LoadResult, LoadResult] | None = None
    """(RS256 saturation, JWKS GET on one connection at the same time), one worker."""
    jwks_bytes: int = 0
    signing_input_bytes: int = 0
    notes: list[str] = field(default_factory=list)
    appendix: list[str] = field(default_factory=list)

    def sign_rate(self, alg: str, threads: int) -> float:
        return next(s.per_second for s in self.sign if s.alg == alg and s.threads == threads)

    def sign_per_cpu_second(self, alg: str, threads: int) -> float:
        return next(s.per_cpu_second for s in self.sign if s.alg == alg and s.threads == threads)

    def best(self, kind: str) -> int:
        """The worker setting with the highest throughput for `kind`."""
        settings = [w for (k, w) in self.keysvc if k == kind]
        return max(settings, key=lambda w: self.keysvc[(kind, w)].rate)


@dataclass(frozen=True)
class Target:
    name: str
    figure: str
    limit: str
    ratio: float
    goal: str
    passed: bool


def _valid(result: LoadResult) -> bool:
    return result.errors <= MAX_ERROR_SHARE * max(result.requests, 1)


def targets(r: Results) -> list[Target]:
    out: list[Target] = []
    raw = r.sign_rate("RS256", 2)
    w = r.best("RS256")
    rs = r.keysvc[("RS256", w)]
    out.append(Target(
        "RS256-4096 issuance ≥ 90 % of the raw 2-thread sign rate",
        f"{rs.rate:,.0f} tokens/s ({w} worker{'s' * (w > 1)})",
        f"{raw:,.0f} signs/s",
        rs.rate / raw,
        "≥ 0.90",
        _valid(rs) and rs.rate / raw >= 0.90,
    ))
    w = r.best("ES256")
    es, bare = r.keysvc[("ES256", w)], r.bare[("POST", w)]
    out.append(Target(
        "ES256 issuance ≥ 70 % of the bare aiohttp POST ceiling (same processes)",
        f"{es.rate:,.0f} tokens/s ({w} worker{'s' * (w > 1)})",
        f"{bare.rate:,.0f} req/s ({w} process{'es' * (w > 1)})",
        es.rate / bare.rate,
        "≥ 0.70",
        _valid(es) and es.rate / bare.rate >= 0.70,
    ))
    w = r.best("JWKS")
    jwks, bare = r.keysvc[("JWKS", w)], r.bare[("GET", w)]
    out.append(Target(
        "JWKS GET ≥ 90 % of the bare aiohttp GET (same bytes, same processes)",
        f"{jwks.rate:,.0f} req/s ({w} worker{'s' * (w > 1)})",
        f"{bare.rate:,.0f} req/s ({w} process{'es' * (w > 1)})",
        jwks.rate / bare.rate,
        "≥ 0.90",
        _valid(jwks) and jwks.rate / bare.rate >= 0.90,
    ))
    worst = max(
        (w for (k, w) in r.keysvc if k == "RS256"),
        key=lambda w: r.keysvc[("RS256", w)].p99_ms / r.keysvc[("RS256", w)].p50_ms,
    )
    rs = r.keysvc[("RS256", worst)]
    out.append(Target(
        "RSA never signed on the event loop: RS256 p99 ≤ 3× p50 at saturation (every setting)",
        f"p99 {rs.p99_ms:,.1f} ms (worst: {worst} worker{'s' * (worst > 1)})",
        f"p50 {rs.p50_ms:,.1f} ms",
        rs.p99_ms / rs.p50_ms,
        "≤ 3.0",
        _valid(rs) and rs.p99_ms <= 3 * rs.p50_ms,
    ))
    return out


def _row(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def _load_cells(x: LoadResult) -> list[str]:
    return [
        f"{x.rate:,.0f}",
        f"{x.p50_ms:.2f}",
        f"{x.p99_ms:.2f}",
        f"{x.errors}",
        f"{x.server_cpu_share:.2f}",
        f"{x.wrk_cpu_share:.2f}",
        f"{x.other_cpu_share:.2f}",
    ]


_LOAD_HEAD = ["req/s", "p50 ms", "p99 ms", "errors", "server cores", "wrk cores", "others' cores"]


def render(r: Results) -> str:
    env = r.environment
    lines = [
        "# keysvc benchmark results",
        "",
        "Written by `make bench` (`bench/run.py`); how to read it: `docs/performance.md`.",
        "Every keysvc figure is a ratio to a limit measured in the same run on the same cores,",
        "because the machine is shared and absolute figures move by ±30 % from run to run.",
        "",
        "## Machine and versions",
        "",
    ]
    lines += [f"- {k}: {v}" for k, v in env.items()]
    lines += ["", "## Targets", "", _row(["target", "keysvc", "limit", "ratio", "goal", "result"]),
              _row(["---"] * 6)]
    results = targets(r)
    for t in results:
        lines.append(_row([t.name, t.figure, t.limit, f"{t.ratio:.2f}", t.goal,
                           "**PASS**" if t.passed else "**FAIL**"]))
    lines += ["", f"{sum(t.passed for t in results)} of {len(results)} targets met.", ""]

    lines += ["## keysvc against its limits", "",
              "Under load (wrk -t2, 64 connections; 16 for RS256). `ratio` = keysvc req/s ÷ the limit; `per core` = the same",
              "ratio per CPU second the server processes actually got (steadier on a shared host).",
              "",
              _row(["figure", "workers", *_LOAD_HEAD, "limit", "limit value", "ratio", "per core"]),
              _row(["---"] * 13)]
    for kind, workers in sorted(r.keysvc, key=lambda k: (["RS256", "ES256", "JWKS"].index(k[0]), k[1])):
        x = r.keysvc[(kind, workers)]
        if kind == "RS256":
            limit_name, limit = "raw sign, 2 threads", r.sign_rate("RS256", 2)
            raw_per_cpu = r.sign_per_cpu_second("RS256", 2)
            per_core = f"{x.rate_per_server_core / raw_per_cpu:.2f}" if raw_per_cpu else ""
        else:
            bare = r.bare[("POST" if kind == "ES256" else "GET", workers)]
            limit_name = f"bare {'POST' if kind == 'ES256' else 'GET'}, {workers} proc"
            limit = bare.rate
            per_core = f"{x.rate_per_server_core / bare.rate_per_server_core:.2f}" if bare.rate_per_server_core else ""
        name = {"RS256": "POST /v1/tokens RS256-4096", "ES256": "POST /v1/tokens ES256",
                "JWKS": "GET /.well-known/jwks"}[kind]
        lines.append(_row([name, str(workers), *_load_cells(x), limit_name, f"{limit:,.0f}",
                           f"{x.rate / limit:.2f}", per_core]))
    lines.append("")

    lines += ["## Limits", "", f"Signing a {r.signing_input_bytes}-byte JWS signing input "
              "(a real keysvc token's header and claims) with the same keys, no HTTP:", "",
              _row(["algorithm", "cryptography, 1 thread", "cryptography, 2 threads",
                    f"openssl speed -multi {r.openssl_processes}"]),
              _row(["---"] * 4)]
    for alg, label in (("RS256", "RS256 (RSA-4096)"), ("ES256", "ES256 (P-256)")):
        openssl = f"{r.openssl[alg]:,.0f}" if alg in r.openssl else "n/a"
        cells = []
        for threads in (1, 2):
            sign = next(s for s in r.sign if s.alg == alg and s.threads == threads)
            cells.append(f"{sign.per_second:,.0f} (on {sign.cpu_share:.2f} cores)")
        lines.append(_row([label, *cells, openssl]))
    lines += ["", f"Framework ceilings: the bare aiohttp app (`bench/bare_app.py`), same process "
              f"set-up as keysvc, same {r.jwks_bytes}-byte JWKS:", "",
              _row(["endpoint", "processes", *_LOAD_HEAD]), _row(["---"] * 9)]
    for (endpoint, processes), x in sorted(r.bare.items()):
        label = "POST /v1/tokens (parse JSON, build reply)" if endpoint == "POST" else "GET JWKS bytes"
        lines.append(_row([label, str(processes), *_load_cells(x)]))
    lines.append("")

    lines += ["## Unloaded latency", "", "One connection, one request at a time, one worker.", "",
              _row(["request", "p50 ms", "p99 ms", "req/s"]), _row(["---"] * 4)]
    for name, x in r.unloaded.items():
        lines.append(_row([name, f"{x.p50_ms:.2f}", f"{x.p99_ms:.2f}", f"{x.rate:,.0f}"]))
    lines.append("")

    if r.probe is not None:
        rs, probe = r.probe
        lines += ["## Event loop under RSA load", "",
                  "A JWKS GET on one extra connection while RS256 issuance saturates one worker: "
                  "if RSA were signed on the event loop, this request would wait behind "
                  "signatures (tens of ms each).", "",
                  _row(["", "req/s", "p50 ms", "p99 ms"]), _row(["---"] * 4),
                  _row(["RS256 issuance (16 connections)", f"{rs.rate:,.0f}", f"{rs.p50_ms:.1f}",
                        f"{rs.p99_ms:.1f}"]),
                  _row(["JWKS GET alongside (1 connection)", f"{probe.rate:,.0f}",
                        f"{probe.p50_ms:.2f}", f"{probe.p99_ms:.2f}"]),
                  ""]

    shares = [x.wrk_cpu_share for x in [*r.bare.values(), *r.keysvc.values()]]
    lines += ["## Load generator", "",
              f"wrk's own CPU time ÷ wall time over the loaded runs: {min(shares):.2f}–"
              f"{max(shares):.2f} of a core (per run in the `wrk cores` columns). It runs on the "
              "same two cores as the server, so that share is CPU the server did not get; "
              "`others' cores` is everything else on the machine during the run (other users).", ""]
    if r.notes:
        lines += ["## Notes", "", *[f"- {n}" for n in r.notes], ""]
    for section in r.appendix:
        lines += [section.rstrip(), ""]
    return "\n".join(lines)
