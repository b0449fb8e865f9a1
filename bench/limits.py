"""The signing limits: how many signatures per second the machine makes with these keys, with
no HTTP at all. `cryptography` releases the GIL while it signs, so N threads in one process
use N cores, exactly as keysvc's signing thread pool does."""

from __future__ import annotations

import re
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa


@dataclass(frozen=True)
class SignRate:
    alg: str
    threads: int
    per_second: float
    input_bytes: int
    cpu_share: float
    """CPU time the signing threads got ÷ wall time (2.0 = both cores, all the time)."""

    @property
    def per_cpu_second(self) -> float:
        return self.per_second / self.cpu_share if self.cpu_share else 0.0


def rs256(key: rsa.RSAPrivateKey, message: bytes) -> Callable[[], object]:
    pad, digest = padding.PKCS1v15(), hashes.SHA256()
    return lambda: key.sign(message, pad, digest)


def es256(key: ec.EllipticCurvePrivateKey, message: bytes) -> Callable[[], object]:
    scheme = ec.ECDSA(hashes.SHA256())
    return lambda: key.sign(message, scheme)


def sign_rate(sign: Callable[[], object], threads: int, seconds: float) -> tuple[float, float]:
    """(signatures per second, CPU share) from `threads` threads signing flat out for
    `seconds`."""
    start = threading.Barrier(threads + 1)
    counts = [0] * threads
    deadline = [0.0]

    def work(index: int) -> None:
        start.wait()
        n = 0
        end = deadline[0]
        clock = time.perf_counter
        while clock() < end:
            sign()
            n += 1
        counts[index] = n

    workers = [threading.Thread(target=work, args=(i,), daemon=True) for i in range(threads)]
    for worker in workers:
        worker.start()
    cpu = time.process_time()
    began = time.perf_counter()
    deadline[0] = began + seconds
    start.wait()
    for worker in workers:
        worker.join()
    wall = time.perf_counter() - began
    return sum(counts) / wall, (time.process_time() - cpu) / wall


_OPENSSL_LINES = {
    "RS256": re.compile(r"^rsa\s+4096 bits\s+\S+\s+\S+\s+([\d.]+)\s+[\d.]+\s*$", re.MULTILINE),
    "ES256": re.compile(
        r"^\s*256 bits ecdsa \(nistp256\)\s+\S+\s+\S+\s+([\d.]+)\s+[\d.]+\s*$", re.MULTILINE
    ),
}


def openssl_speed(processes: int, seconds: int = 2, timeout: float = 60) -> dict[str, float]:
    """`openssl speed -multi N` sign/s for RSA-4096 and P-256 (a reference for the Python
    figures: C with no interpreter in the loop). Empty when openssl is missing or fails."""
    command = [
        "openssl",
        "speed",
        "-seconds",
        str(seconds),
        "-multi",
        str(processes),
        "rsa4096",
        "ecdsap256",
    ]
    try:
        out = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=True)
    except (OSError, subprocess.SubprocessError):
        return {}
    found: dict[str, float] = {}
    for alg, pattern in _OPENSSL_LINES.items():
        match = pattern.search(out.stdout)
        if match:
            found[alg] = float(match.group(1))
    return found
