"""bench/RESULTS.md: each keysvc figure next to the limit measured in the same run, the ratio,
and the issue's targets marked PASS or FAIL.

Limits are measured before keysvc and again after it, and keysvc's figure for each throughput
target once more after that; a ratio uses each side's higher figure, so neither a burst of
someone else's load during a limit's run nor one during keysvc's decides it."""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field

from bench import rsa_designs
from bench.limits import SignRate
from bench.load import LoadResult

MAX_ERROR_SHARE = 0.001
"""A run with more failed requests than this is not a valid figure (its target fails)."""

PASSES = ("before", "after")


@dataclass
class Results:
    environment: dict[str, str]
    sign: list[tuple[str, SignRate]] = field(default_factory=list)
    """(pass "before" | "after", rate)."""
    openssl: dict[str, float] = field(default_factory=dict)
    openssl_processes: int = 2
    bare: dict[tuple[str, int, str], LoadResult] = field(default_factory=dict)
    """(endpoint "POST" | "GET", processes, pass) → result under load."""
    keysvc: dict[tuple[str, int], LoadResult] = field(default_factory=dict)
    """("RS256" | "ES256" | "JWKS", workers) → result under load."""
    keysvc_repeat: dict[tuple[str, int], LoadResult] = field(default_factory=dict)
    """The same, measured again after the limits' second pass, for each target's best setting."""
    paired: dict[str, tuple[int, list[tuple[float, float]]]] = field(default_factory=dict)
    """Target kind → (workers, [(limit, keysvc)] from alternating short rounds)."""
    floor: dict[tuple[str, int, str], LoadResult] = field(default_factory=dict)
    """(algorithm, processes, pass) → the signing floor under load (bench/bare_app.py signing)."""
    unloaded: dict[str, LoadResult] = field(default_factory=dict)
    """Request name → one connection, one worker."""
    probe: tuple[LoadResult, LoadResult] | None = None
    """(RS256 saturation, JWKS GET on one connection at the same time), one worker."""
    rsa_connections: int = 16
    jwks_bytes: int = 0
    signing_input_bytes: int = 0
    otf: tuple[int, list[tuple[float, float]]] | None = None
    """OTF's runner endpoint: (workers, [(/v1/tokens, /otfapi) tokens/s] from alternating
    rounds on one keysvc, the fake otfd on loopback)."""
    otf_uncached: list[tuple[float, float]] = field(default_factory=list)
    """The same with `[otf] workspace_cache = "0s"`: two lookups in otfd for every token."""
    otf_load: LoadResult | None = None
    """OTF's runner endpoint under load, one full-length run (default config)."""
    rsa_designs: rsa_designs.DesignResults = field(default_factory=rsa_designs.DesignResults)
    """tokens.rsa_signing's designs side by side (bench/rsa_designs.py)."""
    notes: list[str] = field(default_factory=list)
    appendix: list[str] = field(default_factory=list)

    def otf_ratio(self, uncached: bool = False) -> float:
        assert self.otf is not None
        pairs = self.otf_uncached if uncached else self.otf[1]
        return statistics.median(otf / v1 for v1, otf in pairs)

    def _signs(self, alg: str, threads: int) -> list[SignRate]:
        return [s for _, s in self.sign if s.alg == alg and s.threads == threads]

    def sign_rate(self, alg: str, threads: int) -> float:
        return max(s.per_second for s in self._signs(alg, threads))

    def sign_per_cpu_second(self, alg: str, threads: int) -> float:
        return max(s.per_cpu_second for s in self._signs(alg, threads))

    def _bares(self, endpoint: str, processes: int) -> list[LoadResult]:
        return [x for (e, p, _), x in self.bare.items() if (e, p) == (endpoint, processes)]

    def bare_rate(self, endpoint: str, processes: int) -> float:
        return max(x.rate for x in self._bares(endpoint, processes))

    def bare_per_core(self, endpoint: str, processes: int) -> float:
        return max(x.rate_per_server_core for x in self._bares(endpoint, processes))

    def paired_median(self, kind: str) -> float | None:
        if kind not in self.paired:
            return None
        return statistics.median(k / limit for limit, k in self.paired[kind][1])

    def floor_rate(self, alg: str, processes: int) -> float | None:
        found = [x.rate for (a, p, _), x in self.floor.items() if (a, p) == (alg, processes)]
        return max(found) if found else None

    def best(self, kind: str) -> int:
        """The worker setting with the highest throughput for `kind` (first pass)."""
        settings = [w for (k, w) in self.keysvc if k == kind]
        return max(settings, key=lambda w: self.keysvc[(kind, w)].rate)

    def keysvc_result(self, kind: str, workers: int) -> LoadResult:
        """keysvc's higher figure of the two passes (one, when it was measured once)."""
        found = [m[(kind, workers)] for m in (self.keysvc, self.keysvc_repeat) if (kind, workers) in m]
        return max(found, key=lambda x: x.rate)

    def per_core_ratio(self, kind: str, workers: int) -> float:
        """keysvc's requests per server CPU second ÷ the limit's, the steadier figure."""
        limit = self.per_core_limit(kind, workers)
        return self.keysvc_result(kind, workers).rate_per_server_core / limit if limit else 0.0

    def per_core_limit(self, kind: str, workers: int) -> float:
        if kind == "RS256":
            return self.sign_per_cpu_second("RS256", 2)
        return self.bare_per_core("POST" if kind == "ES256" else "GET", workers)


@dataclass(frozen=True)
class Target:
    name: str
    figure: str
    limit: str
    ratio: float
    per_core: float
    goal: str
    passed: bool
    floor: float | None = None
    """The signing floor's throughput ÷ the same limit: the most this stack allows."""
    paired: float | None = None
    """The median ratio of alternating short rounds (bench/run.py measure_paired)."""


def _valid(result: LoadResult) -> bool:
    return result.errors <= MAX_ERROR_SHARE * max(result.requests, 1)


def _workers(n: int) -> str:
    return f"{n} worker{'s' if n > 1 else ''}"


def _processes(n: int) -> str:
    return f"{n} process{'es' if n > 1 else ''}"


def targets(r: Results) -> list[Target]:
    out: list[Target] = []
    raw = r.sign_rate("RS256", 2)
    w = r.best("RS256")
    rs = r.keysvc_result("RS256", w)
    out.append(
        Target(
            "RS256-4096 issuance ≥ 90 % of the raw 2-thread sign rate",
            f"{rs.rate:,.0f} tokens/s ({_workers(w)})",
            f"{raw:,.0f} signs/s",
            rs.rate / raw,
            r.per_core_ratio("RS256", w),
            "≥ 0.90",
            _valid(rs) and rs.rate / raw >= 0.90,
            _ratio(r.floor_rate("RS256", 1), raw),
            r.paired_median("RS256"),
        )
    )
    for kind, endpoint, goal, name in (
        (
            "ES256",
            "POST",
            0.70,
            "ES256 issuance ≥ 70 % of the bare aiohttp POST ceiling (same processes)",
        ),
        (
            "JWKS",
            "GET",
            0.90,
            "JWKS GET ≥ 90 % of the bare aiohttp GET (same bytes, same processes)",
        ),
    ):
        w = r.best(kind)
        x, limit = r.keysvc_result(kind, w), r.bare_rate(endpoint, w)
        unit = "tokens/s" if kind == "ES256" else "req/s"
        out.append(
            Target(
                name,
                f"{x.rate:,.0f} {unit} ({_workers(w)})",
                f"{limit:,.0f} req/s ({_processes(w)})",
                x.rate / limit,
                r.per_core_ratio(kind, w),
                f"≥ {goal:.2f}",
                _valid(x) and x.rate / limit >= goal,
                _ratio(r.floor_rate(kind, w), limit) if kind == "ES256" else None,
                r.paired_median(kind),
            )
        )
    if r.otf is not None:
        workers, pairs = r.otf
        v1 = statistics.median(v for v, _ in pairs)
        otf = statistics.median(k for _, k in pairs)
        ratio = r.otf_ratio()
        out.append(
            Target(
                "OTF runner endpoint: ES256 tokens through /otfapi ≥ 50 % of /v1/tokens "
                "(same keysvc; lookups in a fake otfd on loopback)",
                f"{otf:,.0f} tokens/s ({_workers(workers)})",
                f"{v1:,.0f} tokens/s (/v1/tokens)",
                ratio,
                float("nan"),
                "≥ 0.50",
                (r.otf_load is None or _valid(r.otf_load)) and ratio >= 0.50,
                None,
                ratio,
            )
        )
    for goal in rsa_designs.goals(r.rsa_designs):
        throughput = goal.name.startswith("RS256")
        out.append(
            Target(
                goal.name,
                goal.figure,
                goal.limit,
                goal.ratio,
                float("nan"),
                goal.goal,
                goal.passed,
                None,
                goal.ratio if throughput else None,
            )
        )
    worst = max(
        (w for (k, w) in r.keysvc if k == "RS256"),
        key=lambda w: r.keysvc[("RS256", w)].p99_ms / r.keysvc[("RS256", w)].p50_ms,
    )
    rs = r.keysvc[("RS256", worst)]
    out.append(
        Target(
            "RS256 tokens served in turn at saturation: p99 ≤ 3× p50 (every worker setting)",
            f"p99 {rs.p99_ms:,.1f} ms (worst: {_workers(worst)})",
            f"p50 {rs.p50_ms:,.1f} ms",
            rs.p99_ms / rs.p50_ms,
            float("nan"),
            "≤ 3.0",
            _valid(rs) and rs.p99_ms <= 3 * rs.p50_ms,
        )
    )
    return out


def _ratio(value: float | None, limit: float) -> float | None:
    return None if value is None or not limit else value / limit


def _row(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"


_LOAD_HEAD = ["req/s", "p50 ms", "p99 ms", "errors", "server cores", "wrk cores", "others' cores"]


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


def render(r: Results) -> str:
    lines = [
        "# keysvc benchmark results",
        "",
        "Written by `make bench` (`bench/run.py`); how to read it: `docs/performance.md`.",
        "Every keysvc figure is a ratio to a limit measured in the same run on the same cores,",
        "because the machine is shared and absolute figures move by ±30 % from run to run.",
        "Limits are measured before keysvc and again after it, keysvc's figure for each",
        "throughput target once more after that; ratios use each side's higher figure.",
        "",
        "## Machine and versions",
        "",
        *[f"- {k}: {v}" for k, v in r.environment.items()],
        "",
        "## Targets",
        "",
        "`ratio` decides PASS/FAIL (throughput ÷ limit, as the targets are worded); `per core` is",
        "the same ratio per CPU second the server got, a cross-check that other users' load on",
        "the shared cores moves less. `signing floor` is the same ratio for the bare app that",
        "does nothing but sign the same token with the same key (no checks, claims, audit line",
        "or metrics): what signing alone leaves of the limit on this stack, the most any",
        "service built on it can reach. `paired` is the median ratio of alternating short",
        "rounds of the limit and keysvc (both up at once), the steadier estimate on a host",
        "whose speed drifts by ±25 % within minutes (rounds under \"Paired rounds\" below).",
        "",
        _row(
            ["target", "keysvc", "limit", "ratio", "per core", "paired", "signing floor", "goal", "result"]
        ),
        _row(["---"] * 9),
    ]
    results = targets(r)
    for t in results:
        per_core = "" if t.per_core != t.per_core else f"{t.per_core:.2f}"  # NaN: not a rate
        lines.append(
            _row(
                [
                    t.name,
                    t.figure,
                    t.limit,
                    f"{t.ratio:.2f}",
                    per_core,
                    "" if t.paired is None else f"{t.paired:.2f}",
                    "" if t.floor is None else f"{t.floor:.2f}",
                    t.goal,
                    "**PASS**" if t.passed else "**FAIL**",
                ]
            )
        )
    lines += ["", f"{sum(t.passed for t in results)} of {len(results)} targets met.", ""]

    lines += [
        "## keysvc against its limits",
        "",
        (
            f"Under load: wrk -t2, 64 connections ({r.rsa_connections} for RS256, enough to "
            "keep every signing thread busy with a queue behind it). `server cores`, `wrk "
            "cores`, `others' cores`: CPU time ÷ wall time of the server's processes, of wrk, "
            "and of everything else on the machine during the run."
        ),
        "",
        _row(["figure", "workers", *_LOAD_HEAD, "limit", "limit value", "ratio", "per core"]),
        _row(["---"] * 13),
    ]
    order = ["RS256", "ES256", "JWKS"]
    passes = [(k, w, False) for k, w in r.keysvc] + [(k, w, True) for k, w in r.keysvc_repeat]
    for kind, workers, repeat in sorted(passes, key=lambda k: (order.index(k[0]), k[1], k[2])):
        x = (r.keysvc_repeat if repeat else r.keysvc)[(kind, workers)]
        if kind == "RS256":
            limit_name, limit = "raw sign, 2 threads", r.sign_rate("RS256", 2)
        else:
            endpoint = "POST" if kind == "ES256" else "GET"
            limit_name = f"bare {endpoint}, {_processes(workers)}"
            limit = r.bare_rate(endpoint, workers)
        name = {
            "RS256": "POST /v1/tokens RS256-4096",
            "ES256": "POST /v1/tokens ES256",
            "JWKS": "GET /.well-known/jwks",
        }[kind]
        lines.append(
            _row(
                [
                    name,
                    f"{workers} (again)" if repeat else str(workers),
                    *_load_cells(x),
                    limit_name,
                    f"{limit:,.0f}",
                    f"{x.rate / limit:.2f}",
                    f"{x.rate_per_server_core / r.per_core_limit(kind, workers):.2f}",
                ]
            )
        )
    lines.append("")

    lines += [
        "## Limits",
        "",
        (
            f"Signing a {r.signing_input_bytes}-byte JWS signing input (a real keysvc token's "
            "header and claims) with the same keys, no HTTP; signatures/s (CPU cores the "
            "threads got):"
        ),
        "",
        _row(["algorithm", "threads", *[f"{p} keysvc" for p in PASSES]]),
        _row(["---"] * 4),
    ]
    for alg, label in (("RS256", "RS256 (RSA-4096)"), ("ES256", "ES256 (P-256)")):
        for threads in (1, 2):
            cells = []
            for when in PASSES:
                found = [
                    s for p, s in r.sign if p == when and s.alg == alg and s.threads == threads
                ]
                cells.append(
                    f"{found[0].per_second:,.0f} ({found[0].cpu_share:.2f})" if found else ""
                )
            lines.append(_row([label, str(threads), *cells]))
    if r.openssl:
        lines += [
            "",
            f"`openssl speed -multi {r.openssl_processes}` for reference (C, no "
            "interpreter): "
            + ", ".join(f"{alg} {v:,.0f} signs/s" for alg, v in sorted(r.openssl.items())),
        ]
    lines += [
        "",
        (
            "Framework ceilings: the bare aiohttp app (`bench/bare_app.py`: keysvc's process "
            f"set-up, no signing, the same {r.jwks_bytes}-byte JWKS):"
        ),
        "",
        _row(["endpoint", "processes", "measured", *_LOAD_HEAD]),
        _row(["---"] * 10),
    ]
    for (endpoint, processes, when), x in sorted(
        r.bare.items(), key=lambda i: (i[0][0], i[0][1], PASSES.index(i[0][2]))
    ):
        label = (
            "POST /v1/tokens (parse JSON, build reply)" if endpoint == "POST" else "GET JWKS bytes"
        )
        lines.append(_row([label, str(processes), f"{when} keysvc", *_load_cells(x)]))
    lines.append("")

    if r.floor:
        lines += [
            "## The signing floor",
            "",
            (
                "The bare app signing keysvc's real signing input with the same key for every "
                "POST, the way the file backend does (P-256 batched per loop iteration, RSA in a pool of one thread "
                "per core), and answering the real token; nothing else. `of floor`: keysvc's "
                "throughput at the same setting ÷ the floor's, i.e. what keysvc's own work per "
                "token (bearer check, validation, claims, audit line, metrics) leaves of it."
            ),
            "",
            _row(["floor", "processes", "measured", *_LOAD_HEAD, "limit", "ratio", "keysvc of floor"]),
            _row(["---"] * 13),
        ]
        for (alg, processes, when), x in sorted(
            r.floor.items(), key=lambda i: (i[0][0], i[0][1], PASSES.index(i[0][2]))
        ):
            if alg == "RS256":
                limit_name, limit = "raw sign, 2 threads", r.sign_rate("RS256", 2)
            else:
                limit_name, limit = f"bare POST, {_processes(processes)}", r.bare_rate("POST", processes)
            mine = r.keysvc_result(alg, processes) if (alg, processes) in r.keysvc else None
            floor = r.floor_rate(alg, processes) or 0.0
            lines.append(
                _row(
                    [
                        f"{alg} token",
                        str(processes),
                        f"{when} keysvc",
                        *_load_cells(x),
                        limit_name,
                        f"{x.rate / limit:.2f}",
                        f"{mine.rate / floor:.2f}" if mine and floor else "",
                    ]
                )
            )
        lines.append("")

    if r.paired:
        lines += [
            "## Paired rounds",
            "",
            (
                "Each throughput target at keysvc's best setting: the limit and keysvc measured "
                "in alternation (limit first in odd rounds, keysvc first in even ones), each "
                "round a 1 s warm-up and a 4 s measurement, both servers running throughout "
                "(the one not under load is idle). Figures: limit / keysvc per second, and "
                "their ratio."
            ),
            "",
            _row(["target", "workers", "round 1", "round 2", "round 3", "round 4", "median ratio"]),
            _row(["---"] * 7),
        ]
        for kind, (workers, pairs) in r.paired.items():
            cells = [f"{limit:,.0f} / {k:,.0f} = {k / limit:.2f}" for limit, k in pairs]
            cells += [""] * (4 - len(cells))
            median = r.paired_median(kind) or 0.0
            lines.append(_row([kind, str(workers), *cells[:4], f"{median:.2f}"]))
        lines.append("")

    lines += rsa_designs.section(r.rsa_designs)
    lines += otf_section(r)

    lines += [
        "## Unloaded latency",
        "",
        "One connection, one request at a time, one worker.",
        "",
        _row(["request", "p50 ms", "p99 ms", "req/s"]),
        _row(["---"] * 4),
    ]
    for name, x in r.unloaded.items():
        lines.append(_row([name, f"{x.p50_ms:.2f}", f"{x.p99_ms:.2f}", f"{x.rate:,.0f}"]))
    lines.append("")

    if r.probe is not None:
        rs, probe = r.probe
        lines += [
            "## Event loop under RSA load",
            "",
            (
                "A JWKS GET on one extra connection, flat out, while RS256 issuance saturates "
                "one worker (the default `tokens.rsa_signing`): were RSA signed inline in each "
                "request handler, each of these requests would wait behind every signature "
                "ready in the same loop iteration, several milliseconds each."
            ),
            "",
            _row(["", "req/s", "p50 ms", "p99 ms"]),
            _row(["---"] * 4),
            _row(
                [
                    f"RS256 issuance ({r.rsa_connections} connections)",
                    f"{rs.rate:,.0f}",
                    f"{rs.p50_ms:.1f}",
                    f"{rs.p99_ms:.1f}",
                ]
            ),
            _row(
                [
                    "JWKS GET alongside (1 connection)",
                    f"{probe.rate:,.0f}",
                    f"{probe.p50_ms:.2f}",
                    f"{probe.p99_ms:.2f}",
                ]
            ),
            "",
        ]

    runs = [*r.bare.values(), *r.floor.values(), *r.keysvc.values(), *r.keysvc_repeat.values()]
    shares = [x.wrk_cpu_share for x in runs]
    lines += [
        "## Load generator",
        "",
        (
            f"wrk's own CPU time ÷ wall time over the loaded runs: {min(shares):.2f}–"
            f"{max(shares):.2f} of a core (per run in the `wrk cores` columns). It runs on the "
            "same two cores as the servers, so that share is CPU the server did not get, in "
            "the limit's runs as in keysvc's."
        ),
        "",
    ]
    if r.notes:
        lines += ["## Notes", "", *[f"- {n}" for n in r.notes], ""]
    for section in r.appendix:
        lines += [section.rstrip(), ""]
    return "\n".join(lines)


def otf_section(r: Results) -> list[str]:
    """OTF's runner endpoint against /v1/tokens, cache on and off (bench/run.py measure_otf)."""
    if r.otf is None:
        return []
    workers, pairs = r.otf
    lines = [
        "## OTF's runner endpoint",
        "",
        (
            "`POST /otfapi/jobs/{id}/dynamic-credentials` as OTF's agents send it, on an ES256 "
            f"keysvc ({_workers(workers)}) with `[otf]` pointing at the fake otfd "
            "(`bench/otfd.py`, its own process on loopback), one job asking again and again. "
            "By default each token costs one lookup in otfd (the job, for its status) and the "
            "job's first token a second one (its workspace, then reused for the job's next "
            "tokens within `workspace_cache`); with `workspace_cache = \"0s\"` every token "
            "costs both, as a phase's first token does. Rounds alternate /v1/tokens and "
            "/otfapi on the same keysvc (4 s each, 1 s warm-up); figures in tokens/s. "
            "wrk, keysvc and otfd share the two cores."
        ),
        "",
        _row(["round", "/v1/tokens", "/otfapi", "ratio", "/v1/tokens", "/otfapi, cache off", "ratio"]),
        _row(["---"] * 7),
    ]
    uncached = r.otf_uncached or [(0.0, 0.0)] * len(pairs)
    for number, ((v1, otf), (v1b, otfb)) in enumerate(zip(pairs, uncached, strict=False), 1):
        cells = [f"{v1:,.0f}", f"{otf:,.0f}", f"{otf / v1:.2f}"]
        cells += [f"{v1b:,.0f}", f"{otfb:,.0f}", f"{otfb / v1b:.2f}" if v1b else ""]
        lines.append(_row([str(number), *cells]))
    median_uncached = f"{r.otf_ratio(uncached=True):.2f}" if r.otf_uncached else ""
    lines.append(_row(["median", "", "", f"{r.otf_ratio():.2f}", "", "", median_uncached]))
    if r.otf_load is not None:
        x = r.otf_load
        lines += [
            "",
            f"One full-length run of /otfapi: {x.rate:,.0f} tokens/s, p50 {x.p50_ms:.2f} ms, "
            f"p99 {x.p99_ms:.2f} ms, {x.errors} errors.",
        ]
    lines.append("")
    return lines
