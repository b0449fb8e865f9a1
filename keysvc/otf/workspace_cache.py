"""A job's workspace, remembered for the job's next tokens.

A run phase with several provider configurations (AWS and GCP, or tagged aliases) asks for one
token each, seconds apart, with the same job token. The job is looked up in otfd for every one
of them: its status decides whether a token may be issued at all. The workspace lookup answers
only two questions whose answers do not change while the job exists: may this job read this
workspace (OTF's `Job.CanAccess` compares the job's own organization and workspace id, both fixed
when the job is made), and what is its name. So its answer is kept for `ttl`, keyed by the job
token (a SHA-256 of it: the cache never holds the token) and the workspace id otfd named, and
every refusal stays as it was:

- a token for another job, an expired one, a user's: refused before any lookup;
- a token otfd no longer accepts, a job that is not running, not a plan or apply, or of an
  organization outside `[otf] organizations`: the job lookup, made for every token, refuses it;
- otfd unreachable: the job lookup fails, 503;
- a name that would forge a `sub`: every token's names are checked, cached or not.

What the cache can make stale is a workspace renamed while one of its jobs runs: that job's
tokens carry the old name for at most `ttl` (otfd itself would put the new name in the next
token of the same phase). `[otf] workspace_cache = "0s"` turns the cache off.
"""

from __future__ import annotations

import hashlib
import time

from keysvc.otf.otfd import Workspace

MAX_ENTRIES = 10_000
"""A bound on memory: one entry per running job that asked for a token within `ttl`."""


class WorkspaceCache:
    def __init__(self, ttl: float) -> None:
        self.ttl = ttl
        self._entries: dict[tuple[bytes, str], tuple[float, Workspace]] = {}

    def get(self, token: str, workspace_id: str) -> Workspace | None:
        if self.ttl <= 0:
            return None
        key = (hashlib.sha256(token.encode()).digest(), workspace_id)
        found = self._entries.get(key)
        if found is None:
            return None
        if found[0] <= time.monotonic():
            del self._entries[key]
            return None
        return found[1]

    def put(self, token: str, workspace: Workspace) -> None:
        if self.ttl <= 0:
            return
        now = time.monotonic()
        if len(self._entries) >= MAX_ENTRIES:
            self._entries = {k: v for k, v in self._entries.items() if v[0] > now}
            while len(self._entries) >= MAX_ENTRIES:  # all live: drop the oldest
                del self._entries[next(iter(self._entries))]
        key = (hashlib.sha256(token.encode()).digest(), workspace.id)
        self._entries[key] = (now + self.ttl, workspace)
