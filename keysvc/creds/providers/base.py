"""What every provider module offers: parse its settings (no I/O), then render the files and
variables for one configuration once its token is known."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from keysvc.creds.variables import Settings, suffix


@dataclass(frozen=True)
class FileNames:
    """OTF's file naming: `<workdir>/<provider><_TAG>_<name>`, `name` one of the provider's
    declared `files`."""

    workdir: Path
    provider: str  # lower case: aws, gcp, azure, vault, kubernetes
    tag: str
    files: tuple[str, ...]

    def name(self, name: str) -> str:
        if name not in self.files:  # clean would never remove it
            raise ValueError(f"{self.provider} declares no file {name!r}")
        return f"{self.provider}{suffix(self.tag)}_{name}"

    def path(self, name: str) -> Path:
        return self.workdir / self.name(name)


@dataclass
class Rendered:
    """One configuration's output: files to write (name in the workdir → content), the
    variables the run needs in single-configuration mode, its entry in
    `tfc_<provider>_dynamic_credentials` in multiple-configuration mode, and the file of a
    credential `clean` must revoke (a Vault token issued in exchange for the token)."""

    files: dict[str, bytes]
    env: dict[str, str]
    tfvars: dict[str, str]
    revoke: str | None = field(default=None)


class Configuration(ABC):
    """One enabled provider configuration, validated."""

    provider: ClassVar[str]
    files: ClassVar[tuple[str, ...]]
    """What `render` may name its files, after `<provider><_TAG>_`: `clean` removes nothing
    else, whatever a manifest edited by the run lists."""

    audience: str  # set by each provider's constructor, which validates its settings

    def __init__(self, settings: Settings) -> None:
        self.tag = settings.tag

    def exchange(self, token: str) -> str:
        """The credential to write for `token`; most providers write the token itself."""
        return token

    def discard(self, credential: str) -> None:
        """Give back a credential from `exchange` that will not be used after all."""

    @abstractmethod
    def render(self, credential: str, names: FileNames) -> Rendered: ...
