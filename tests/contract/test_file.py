"""The file backend under the contract: a key directory (rotation, revocation and destruction
work there), backend-level and through the service; and the single key file otfd uses, which
can do none of them and says so through its capabilities rather than by failing."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from keysvc.backends.base import CreatesVersions, DestroysVersions, DisablesVersions, refusal
from keysvc.backends.file import FileBackend, FileSettings
from keysvc.testing.backend_contract import CHECKS, checks_for
from tests.conftest import write_key
from tests.contract.service import (
    KEYGEN_CASES,
    EmptyStartContract,
    ServiceContract,
    ServiceSubject,
)


class FileSubject(ServiceSubject):
    """A key directory. The file backend reads local files only: nothing to be unreachable,
    so the outage checks and faults do not apply (`outage` is not overridden)."""

    backend_class = FileBackend
    name = "local"
    key_cases = KEYGEN_CASES
    rotation_key = "ec-p256"

    def __init__(self, directory: Path, key_type: str = "ec-p256") -> None:
        self.directory = directory
        self.key_type = key_type

    def table(self) -> dict[str, Any]:
        return {"name": self.name, "type": "file", "path": str(self.directory),
                "key_type": self.key_type}

    def make_backend(self) -> FileBackend:
        return FileBackend(self.name, FileSettings(path=self.directory, key_type=self.key_type))

    async def seed(self, key_type: str) -> None:
        write_key(self.directory, key_type, datetime.now(UTC) - timedelta(hours=1))


@pytest.fixture
def subject(tmp_path: Path) -> FileSubject:
    directory = tmp_path / "keys"
    directory.mkdir(mode=0o700)
    return FileSubject(directory)


class TestFileContract(ServiceContract, EmptyStartContract):
    subject_class = FileSubject


def test_the_outage_checks_do_not_apply_to_local_files() -> None:
    outage_checks = ("unreachable_is_unavailable", "down_at_start_recovers")
    assert [c.name for c in checks_for(FileSubject)] == [
        c.name for c in CHECKS if c.name not in outage_checks
    ]


@pytest.mark.parametrize("capability", [CreatesVersions, DisablesVersions, DestroysVersions])
def test_a_single_key_file_says_what_it_cannot_do(capability: Any, tmp_path: Path) -> None:
    path = write_key(tmp_path, "ec-p256")
    backend = FileBackend("otfd", FileSettings(path=path))
    assert refusal(backend, capability) == (
        f"backend 'otfd' cannot {capability.verb}: it uses the single key file {path}; point"
        f" path at a directory of PEM files to {capability.verb} keys"
    )
    assert refusal(FileBackend("dir", FileSettings(path=tmp_path)), capability) is None
