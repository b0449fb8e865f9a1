"""The ES256 issuance hot path (or, with --jwks, the JWKS GET), for working on it: keysvc
(1 worker) and the bare app (1 process) measured in alternation, or one side's profile under
load.

    .venv/bin/python bench/hotpath.py --rounds 3 --seconds 6
    .venv/bin/python bench/hotpath.py --profile keysvc   # needs py-spy (pip install py-spy)

It prints each side's tokens per second and per CPU second the server got, and keysvc's share
of the bare ceiling. Alternating A/B rounds and per-CPU-second figures keep the comparison
usable on a shared machine, where the absolute figures are not.
"""

from __future__ import annotations

import argparse
import collections
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.fixtures import prepare
from bench.load import wrk
from bench.run import Bench

WORK = ROOT / "bench" / ".work-hotpath"


def top_frames(raw: Path, count: int = 25) -> str:
    """The functions with the most samples of their own, from py-spy's raw (collapsed) output."""
    own: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, samples = line.rpartition(" ")
        if not stack:
            continue
        total += int(samples)
        own[stack.split(";")[-1]] += int(samples)
    return "\n".join(f"{n / total:6.1%}  {frame}" for frame, n in own.most_common(count))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--profile", choices=("keysvc", "bare"), help="py-spy one side under load")
    parser.add_argument("--jwks", action="store_true", help="GET the JWKS instead of issuing")
    args = parser.parse_args()
    bench = Bench(prepare(WORK), args.seconds, warmup=2)
    path, script = ("/.well-known/jwks", bench.get) if args.jwks else ("/v1/tokens", bench.post)
    if args.profile:
        spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
        raw = WORK / "profile.txt"
        side = bench.keysvc("ES256", 1) if args.profile == "keysvc" else bench.bare(1)
        with side as server:
            wrk(server.url + path, script, seconds=2)
            assert server.proc is not None
            recorder = subprocess.Popen(
                [
                    spy,
                    "record",
                    "-p",
                    str(server.proc.pid),
                    "-d",
                    f"{args.seconds:g}",
                    "-r",
                    "250",
                    "-f",
                    "raw",
                    "-o",
                    str(raw),
                    "--nonblocking",
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            try:
                wrk(server.url + path, script, seconds=args.seconds)
            finally:
                recorder.wait()
        print(top_frames(raw))
        return 0
    rates: dict[str, list[float]] = {"keysvc": [], "bare": []}
    per_core: dict[str, list[float]] = {"keysvc": [], "bare": []}
    for _ in range(args.rounds):
        for side in ("keysvc", "bare"):
            server = bench.keysvc("ES256", 1) if side == "keysvc" else bench.bare(1)
            with server:
                result = bench.load(server, path, script)
            rates[side].append(result.rate)
            per_core[side].append(result.rate_per_server_core)
            print(
                f"{side:6}  {result.rate:8,.0f} req/s  {result.rate_per_server_core:8,.0f} "
                f"req per server CPU second  (server {result.server_cpu_share:.2f} cores)",
                flush=True,
            )
    k, b = statistics.median(per_core["keysvc"]), statistics.median(per_core["bare"])
    print(
        f"median per CPU second: keysvc {k:,.0f}, bare {b:,.0f}, ratio {k / b:.2f}; "
        f"CPU per token {1e6 / k:,.0f} µs vs {1e6 / b:,.0f} µs; req/s ratio "
        f"{statistics.median(rates['keysvc']) / statistics.median(rates['bare']):.2f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
