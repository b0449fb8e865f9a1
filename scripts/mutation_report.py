"""After `mutmut run`: the mutation score of the security core, checked against docs/testing.md.

Every mutant that survives must be listed in docs/testing.md's survivor table, each with why:
"equivalent: ..." (no test can tell it from the original) or another reason it is left alive.
Equivalent mutants are left out of the score:

    score = killed non-equivalent mutants / non-equivalent mutants

Exits 1 when a survivor is not in the table (document it, or add a test that kills it), when the
table lists a mutant that mutmut no longer has or a non-equivalent one that is now killed (remove
the row), or when the score is under 90 %. An equivalent mutant reported killed means a test
failed for another reason (a flaky test): it is named, and does not count.
Run by `make mutation`; not part of CI.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "testing.md"
GOAL = 0.90
ROW = re.compile(r"^\|\s*`(?P<name>keysvc\.[^`]+__mutmut_\d+)`\s*\|.*\|\s*(?P<why>[^|]+?)\s*\|\s*$")


def statuses() -> dict[str, str]:
    """Every mutant's status, from `mutmut results --all true` (name: status lines)."""
    out = subprocess.run(
        [str(Path(sys.executable).parent / "mutmut"), "results", "--all", "true"],
        cwd=ROOT, capture_output=True, text=True, check=True,
    ).stdout
    found = {}
    for line in out.splitlines():
        name, sep, status = line.strip().rpartition(": ")
        if sep and name.startswith("keysvc."):
            found[name] = status
    return found


def documented() -> dict[str, str]:
    """The survivor table of docs/testing.md: mutant name -> why it survives."""
    return {m["name"]: m["why"] for m in map(ROW.match, DOC.read_text().splitlines()) if m}


def main() -> int:
    found = statuses()
    if not found:
        print("no mutation results: run `mutmut run` first", file=sys.stderr)
        return 1
    table = documented()
    equivalent = {n for n, why in table.items() if why.lower().startswith("equivalent")}
    killed = {n for n, s in found.items() if s in ("killed", "timeout")}
    alive = {n: s for n, s in found.items() if n not in killed}
    scored = set(found) - equivalent
    score = len(killed & scored) / len(scored) if scored else 0.0

    by_status: dict[str, int] = {}
    for status in found.values():
        by_status[status] = by_status.get(status, 0) + 1
    print(f"{len(found)} mutants: " + ", ".join(f"{n} {s}" for s, n in sorted(by_status.items())))
    print(f"{len(equivalent & set(found))} are equivalent (docs/testing.md), left out of the score")
    print(f"score: {len(killed & scored)}/{len(scored)} non-equivalent mutants killed"
          f" = {score:.1%} (goal {GOAL:.0%})")

    problems = 0
    for name in sorted(set(alive) - set(table)):
        print(f"not in docs/testing.md: {name} ({alive[name]}): see `mutmut show {name}`")
        problems += 1
    for name in sorted(set(table) - set(found)):
        print(f"listed in docs/testing.md but mutmut has no such mutant: {name}")
        problems += 1
    for name in sorted((set(table) - equivalent) & killed):
        print(f"listed in docs/testing.md but now killed: {name}")
        problems += 1
    for name in sorted(equivalent & killed):
        print(f"warning: equivalent, yet reported killed (a flaky test?): {name};"
              f" rerun it with `mutmut run {name}`")
    if score < GOAL:
        print(f"the score is under {GOAL:.0%}")
        problems += 1
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
