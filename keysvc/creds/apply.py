"""`apply`: validate every variable, fetch every token (and exchange those that need it), then
write every file in one transaction. Any failure leaves no credentials behind."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from keysvc.creds import manifest, transaction
from keysvc.creds.errors import WorkdirError
from keysvc.creds.plan import Plan, ProviderPlan, make_plan
from keysvc.creds.providers import Configuration, FileNames, Rendered
from keysvc.creds.revocation import Warn
from keysvc.creds.tokens import TokenClient
from keysvc.run_identity import Run


@dataclass(frozen=True)
class Result:
    """What the run needs: the variables to set and the files keysvc wrote (absolute paths)."""

    env: dict[str, str]
    files: list[Path] = field(default_factory=list)


def warn_stderr(message: str) -> None:
    print(f"keysvc: warning: {message}", file=sys.stderr)


@dataclass
class _Output:
    files: dict[str, bytes] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)
    vault: list[str] = field(default_factory=list)


def _render_provider(provider: ProviderPlan, rendered: list[Rendered], out: _Output) -> None:
    for r in rendered:
        out.files.update(r.files)
        if r.revoke:
            out.vault.append(r.revoke)
    if not provider.multiple:
        for r in rendered:
            out.env.update(r.env)
        return
    tfvars: dict[str, Any] = {}
    for configuration, r in zip(provider.configurations, rendered, strict=True):
        if configuration.tag:
            tfvars.setdefault("aliases", {})[configuration.tag] = r.tfvars
        else:
            tfvars["default"] = r.tfvars
    content = {
        provider.tfvars_variable: dict(sorted(tfvars.items(), key=lambda i: i[0] != "default"))
    }
    out.files[provider.tfvars_file] = json.dumps(content, indent=2).encode()


def _fetch(
    plan: Plan, run: Run, client: TokenClient, obtained: list[tuple[Configuration, str]]
) -> dict[str, str]:
    """Every credential, appended to `obtained` as it arrives (so a failure can give them
    back); returns the manual tokens' variables."""
    for provider in plan.providers:
        for configuration in provider.configurations:
            token = client.issue(run, configuration.audience)
            obtained.append((configuration, configuration.exchange(token)))
    return {m.variable: client.issue(run, m.audience) for m in plan.manual}


NO_PROVIDER = (
    "no provider is enabled (no TFC_<AWS|GCP|AZURE|VAULT|KUBERNETES>_PROVIDER_AUTH[_TAG]=true and"
    " no TFC_WORKLOAD_IDENTITY_AUDIENCE[_TAG]): no credentials written, and none an earlier apply"
    " wrote are left in {workdir}"
)


@dataclass(frozen=True)
class EnvFile:
    """Where `apply` also writes the variables the run must set: one more file of the apply
    (mode 0600, in the manifest, replaced by the next apply, removed by `clean`), since the
    variables hold tokens (ARM_OIDC_TOKEN, KUBE_TOKEN, VAULT_TOKEN). Its name is one apply owns
    (manifest.VARIABLES_FILE), directly inside the work directory."""

    name: str
    render: Callable[[Mapping[str, str]], str]

    @classmethod
    def inside(
        cls, workdir: Path, path: Path | str, render: Callable[[Mapping[str, str]], str]
    ) -> EnvFile:
        """`path` as a name in `workdir`: a bare name, or a path whose directory is `workdir`."""
        path = Path(path)
        inside = path.parent == Path(".") or path.parent.absolute() == Path(workdir).absolute()
        if not inside:
            raise WorkdirError(
                f"the variables file {str(path)!r} must be directly inside the work directory"
                f" {workdir} (clean removes only what is there)"
            )
        if not manifest.VARIABLES_FILE.fullmatch(path.name):
            raise WorkdirError(
                f"the variables file must be named keysvc.env, keysvc.json or"
                f" keysvc_<NAME>.env|.json, not {path.name!r}: clean removes only names apply"
                " owns, so an edited manifest cannot make it remove a file of the run's"
            )
        return cls(path.name, render)


def apply(
    env: Mapping[str, str],
    run: Run,
    workdir: Path | str,
    client: TokenClient,
    *,
    warn: Warn = warn_stderr,
    env_file: EnvFile | None = None,
) -> Result:
    """Configure dynamic credentials for one phase of a run in `workdir` (the Terraform working
    directory, the same for plan and apply). Raises CredsError (nothing written) on failure.
    With `env_file`, the variables are also written to that file among the credentials."""
    with transaction.open_workdir(Path(workdir)) as opened:
        directory = opened.path
        plan = make_plan(env, run.run_phase)
        if plan.empty:
            warn(NO_PROVIDER.format(workdir=directory))
        obtained: list[tuple[Configuration, str]] = []
        try:
            manual_env = _fetch(plan, run, client, obtained)
            out = _Output()
            credential_of = {id(c): credential for c, credential in obtained}
            for provider in plan.providers:
                rendered = [
                    c.render(credential_of[id(c)], FileNames(directory, c.provider, c.tag, c.files))
                    for c in provider.configurations
                ]
                _render_provider(provider, rendered, out)
            variables = {**out.env, **manual_env}
            if env_file is not None:
                out.files[env_file.name] = env_file.render(variables).encode()
            transaction.replace(opened, out.files, out.vault, env, warn)
        except BaseException:
            for configuration, credential in obtained:
                configuration.discard(credential)
            raise
    return Result(env=variables, files=[directory / name for name in sorted(out.files)])


def clean(
    workdir: Path | str, env: Mapping[str, str] | None = None, *, warn: Warn = warn_stderr
) -> list[Path]:
    """Remove every file `apply` wrote in `workdir` (revoking its Vault tokens); nothing else.
    Returns the files removed (none when there was nothing to remove).

    The Vault tokens are revoked at the Vault that `env` (by default this process's
    environment: the run's `TFC_VAULT_*` variables, as `apply` had them) names, never at an
    address read from the work directory, which the run controls."""
    return transaction.clean(Path(workdir), os.environ if env is None else env, warn)
