"""`keysvc keys list|rotate|import|generate|revoke`: key versions, locally through the backends."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

from keysvc import http_fetch, jose, keygen, rotation
from keysvc import prune as pruning
from keysvc.atomic_write import write_atomically
from keysvc.backends.base import (
    DisablesVersions,
    ListsDisabledVersions,
    OperationNotSupported,
    refusal,
)
from keysvc.backends.file import FileBackend, load_private_key, name_for
from keysvc.cli.common import (
    CLIError,
    DashArgumentCommand,
    config_option,
    echo_json,
    json_option,
    one_line,
)
from keysvc.errors import BackendError, ConfigError
from keysvc.cli.loading import load, otfd_options
from keysvc.cli.params import DurationParam
from keysvc.clouds import refusal_warning
from keysvc.durations import format_duration
from keysvc.doctor.service_keys import fetch_service_keys
from keysvc.http_fetch import FetchError
from keysvc.keyring import KeyRing, RingKey, iso, left_jwks
from keysvc.secrets import read_secret_file
from keysvc.prune import PruneReport
from keysvc.rotation import Rotation, describe_new_version, signs_phrase
from keysvc.secrets import write_private_file
from keysvc.service import local_ring


@click.group()
def keys() -> None:
    """List, rotate, prune, import, generate and revoke signing keys."""



def warn(message: str) -> None:
    click.echo(f"keysvc: warning: {message}", err=True)


def _warn_clouds(kid: str, algorithm: str) -> None:
    warning = refusal_warning(kid, algorithm)
    if warning is not None:
        warn(warning)


def _warn_unseen_signer(signer: RingKey, published_before: set[str], config: Any) -> None:
    """Warn when the key that signs after a revocation may be missing from verifiers' cached
    JWKS: it was not published before (a key that had left the JWKS), or was created so
    recently that a replica may not have listed it and a verifier cached the JWKS without it."""
    rotation = config.rotation
    window = rotation.refresh_interval + rotation.jwks_max_age
    age = datetime.now(UTC) - signer.created_at
    if signer.kid not in published_before:
        why = "it was not in the JWKS before this revocation"
    elif age < window:
        why = f"it was created only {max(int(age.total_seconds()), 0)}s ago"
    else:
        return
    warn(
        f"{signer.kid} signs now, but {why}: verifiers that cached the JWKS without it refuse"
        f" its tokens for up to refresh_interval + jwks_max_age ({format_duration(window)});"
        " AWS, GCP and Azure refetch on an unknown kid, so a retried run succeeds"
    )


def _config(config_path: Path | None, **flags: Any):  # type: ignore[no-untyped-def]
    config, _ = load(config_path, **flags)
    return config


@keys.command("list")
@config_option
@otfd_options
@click.option(
    "--all",
    "show_all",
    is_flag=True,
    help="Also the versions that left the JWKS and the revoked ones, each with its backend"
    " version id (a file name for the file backend): what may be destroyed.",
)
@click.option(
    "--url",
    metavar="URL",
    help="Ask a running replica (GET URL/v1/keys) instead of the backends: needs no backend"
    " credentials, only --token-file.",
)
@click.option(
    "--token-file",
    type=click.Path(path_type=Path, dir_okay=False),
    help="With --url: a client token with scope keys:read (file mode 0600).",
)
@click.option("--ca-file", type=click.Path(path_type=Path, dir_okay=False),
              help="With --url: CA bundle to trust for an https URL.")
@json_option
def list_keys(
    config_path: Path | None,
    otfd_flags: dict[str, Any],
    show_all: bool,
    url: str | None,
    token_file: Path | None,
    ca_file: Path | None,
    as_json: bool,
) -> None:
    """Every key in the ring with its state, as each replica computes it now.

    With --all, also what is no longer published: versions past their published_until
    (state `gone`) and revoked ones (`revoked`), with the backend's version id, so they can be
    found and destroyed. With --url, the listing a running replica serves (/v1/keys)."""
    notes: list[str] = []
    if url is not None:
        if show_all:
            raise CLIError(
                "--all needs the backends (--config): a replica's /v1/keys lists only the"
                " published keys"
            )
        if config_path is not None or any(otfd_flags.values()):
            raise CLIError("give --url (a running replica) or --config (the backends), not both")
        if token_file is None:
            raise CLIError("--url needs --token-file (a client token with scope keys:read)")
        rows = _remote_listing(url, token_file, ca_file)
    else:
        if token_file is not None or ca_file is not None:
            raise CLIError("--token-file and --ca-file go with --url")
        config = _config(config_path, **otfd_flags)

        async def run() -> list[dict[str, Any]]:
            async with local_ring(config) as ring:
                if show_all:
                    return await _every_version(ring, notes)
                return ring.view().listing()

        rows = asyncio.run(run())
    for note in notes:
        click.echo(f"keysvc: note: {note}", err=True)
    if as_json:
        echo_json({"keys": rows})
        return
    header = ["KID", "ALG", "BACKEND", "STATE", "CREATED", "SIGNS FROM", "PUBLISHED UNTIL"]
    if show_all:
        header.append("VERSION")
    table = [header] + [
        [r["kid"], r["alg"], r["backend"], r["state"], r["created_at"], r["signs_from"] or "-",
         r["published_until"] or "-", *([r["version"]] if show_all else [])]
        for r in rows
    ]
    widths = [max(len(str(row[i])) for row in table) for i in range(len(header))]
    for row in table:
        click.echo("  ".join(str(cell).ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())


async def _every_version(ring: KeyRing, notes: list[str]) -> list[dict[str, Any]]:
    """One row per backend version: the published ones in the ring's states, those that left
    the JWKS (`gone`) and the disabled ones each backend still keeps (`revoked`)."""
    view = ring.view()
    rows = []
    for row, status in zip(view.listing(), view.keys, strict=True):
        rows += [{**row, "backend": key.backend_name, "version": key.version.version_id}
                 for key in ring.versions_of(status.key.kid)]
    for key, signed_from, left in left_jwks(ring.all_keys(), ring.lifecycle, ring.clock()):
        rows += [
            {"kid": key.kid, "alg": key.alg.value, "backend": copy.backend_name,
             "created_at": iso(key.created_at), "state": "gone", "signs_from": iso(signed_from),
             "published_until": iso(left), "version": copy.version.version_id}
            for copy in ring.versions_of(key.kid)
        ]
    for backend in ring.backends:
        if not isinstance(backend, ListsDisabledVersions):
            notes.append(
                f"backend {backend.name} cannot list the versions it disabled: see its own"
                " console for revoked versions"
            )
            continue
        for version in await backend.list_disabled_versions():
            alg = jose.choose_algorithm(version.public_key, ring.algorithm, version.algorithms)
            rows.append(
                {"kid": jose.thumbprint(version.public_key), "alg": alg.value,
                 "backend": backend.name, "created_at": iso(version.created_at),
                 "state": "revoked", "signs_from": None, "published_until": None,
                 "version": version.version_id}
            )
    return rows


def _remote_listing(url: str, token_file: Path, ca_file: Path | None) -> list[dict[str, Any]]:
    """What a running replica's /v1/keys lists (the same rows as a local `keys list`)."""
    token = read_secret_file(token_file, what="client token file").decode().strip()

    async def fetch() -> list[dict[str, Any]]:
        async with http_fetch.session(ca_file) as client:
            return (await fetch_service_keys(client, url, token)).keys

    try:
        rows = asyncio.run(fetch())
    except FetchError as exc:
        raise CLIError(str(exc)) from None
    fields = ("kid", "alg", "backend", "created_at", "state", "signs_from", "published_until")
    if not all(isinstance(row.get(f), (str, type(None))) for row in rows for f in fields):
        raise CLIError(f"{url.rstrip('/')}/v1/keys did not answer keysvc's key listing")
    return [{f: row.get(f) for f in fields} for row in rows]


class _DurationOrPeriod(DurationParam):
    """--if-older-than's value: a duration, or PERIOD (the flag given alone) for
    rotation.period."""

    def convert(self, value: Any, param: Any, ctx: Any) -> Any:
        return PERIOD if value == PERIOD else super().convert(value, param, ctx)


PERIOD = "period"


@keys.command()
@config_option
@click.option("--backend", "backend_name", help="Backend to rotate (required with several).")
@click.option(
    "--if-older-than",
    "if_older_than",
    type=_DurationOrPeriod(),
    is_flag=False,
    flag_value=PERIOD,
    metavar="[DURATION]",
    help="Only when the backend's newest version is older than DURATION (alone: the config's"
    " rotation.period); otherwise say why nothing was done, exit 0. For schedules: runs started"
    " at once create at most one version (docs/runbooks/rotation.md).",
)
@json_option
def rotate(
    config_path: Path | None, backend_name: str | None, if_older_than: Any, as_json: bool
) -> None:
    """Create a new key version. It is published at once and signs after publish_lead."""
    config = _config(config_path)
    if if_older_than == PERIOD:
        if config.rotation.period is None:
            raise CLIError(
                "--if-older-than without a DURATION uses rotation.period, which the config does"
                " not set: give a DURATION (e.g. --if-older-than 30d) or set [rotation] period"
            )
        if_older_than = config.rotation.period

    async def run() -> Rotation:
        async with local_ring(config) as ring:
            try:
                return await rotation.rotate(ring, backend_name, if_older_than)
            except OperationNotSupported as exc:
                raise CLIError(str(exc)) from None

    result = asyncio.run(run())
    if result.created is not None:
        _warn_clouds(result.created["kid"], result.created["alg"])
    if as_json:
        echo_json(result.to_json())
    else:
        click.echo(result.message)


MAX_IMPORT_BYTES = 1 << 20
"""Far above any PEM private key (RSA-16384 is ~12 KiB): a larger input is not one."""


def _read_key_input(file: Path) -> tuple[Path, bytes]:
    """FILE's bytes (standard input for `-`; a pipe such as <(vault ...) works too)."""
    if str(file) == "-":
        return Path("standard input"), click.get_binary_stream("stdin").read(MAX_IMPORT_BYTES + 1)
    try:
        with open(file, "rb") as fh:
            data = fh.read(MAX_IMPORT_BYTES + 1)
    except OSError as exc:
        raise CLIError(f"{file} cannot be read: {exc.strerror}") from None
    return file, data


@keys.command("import")
@config_option
@click.argument("file", type=click.Path(path_type=Path, dir_okay=False, allow_dash=True))
@click.option("--backend", "backend_name", help="File backend to add it to (required with several).")
@json_option
def import_key(config_path: Path | None, file: Path, backend_name: str | None, as_json: bool) -> None:
    """Add the private key in FILE (PEM: PKCS#1, PKCS#8 or OpenSSH, unencrypted; - reads
    standard input) to a file backend's key directory as key-<UTC now>.pem, mode 0600.

    The key enters the lifecycle like a rotated one: published at once, it signs after
    publish_lead. A key already in the ring (same kid) or revoked in that directory is
    refused. The file is written as PKCS#8; FILE itself is left as it is."""
    config = _config(config_path)
    source, data = _read_key_input(file)
    if len(data) > MAX_IMPORT_BYTES:
        raise CLIError(f"{source} is not a PEM private key (larger than {MAX_IMPORT_BYTES} bytes)")
    key = load_private_key(source, data)

    async def run() -> dict[str, Any]:
        async with local_ring(config) as ring:
            backend = ring.backend(backend_name)
            if not isinstance(backend, FileBackend):
                raise CLIError(
                    f"backend {backend.name!r} is not a file backend: keys enter it through"
                    " its own service (keysvc keys rotate creates one there)"
                )
            kid = jose.thumbprint(key.public_key())
            present = ring.versions_of(kid)
            if present:
                where = ", ".join(f"backend {k.backend_name} version {k.version.version_id}"
                                  for k in present)
                raise CLIError(f"key {kid} is already in the ring ({where})")
            version = await backend.import_version(key)
            return {**await describe_new_version(ring, backend, version),
                    "path": str(backend.settings.path / version.version_id)}

    result = asyncio.run(run())
    _warn_clouds(result["kid"], result["alg"])
    if as_json:
        echo_json(result)
    else:
        click.echo(
            f"imported {result['kid']} ({result['alg']}) into backend {result['backend']} as"
            f" {result['path']}: published now, {signs_phrase(result)}"
        )


@keys.command()
@config_option
@click.option("--backend", "backend_name", help="Only this backend (default: every backend).")
@click.option("--dry-run", is_flag=True, help="Say what would be done; change nothing.")
@click.option(
    "--destroy",
    "destroy_now",
    is_flag=True,
    help="Where a backend destroys at once (file: delete; Vault: trim; PKCS#11: destroy the"
    " objects), destroy instead of disabling. Cannot be undone.",
)
@json_option
def prune(
    config_path: Path | None,
    backend_name: str | None,
    dry_run: bool,
    destroy_now: bool,
    as_json: bool,
) -> None:
    """Retire every key version that left the JWKS at least rotation.prune_margin ago.

    Disabled (file: renamed *.pem.revoked, as revoke does), or, where the backend destroys
    after a grace period (Cloud KMS, AWS KMS: 30 days), scheduled for destruction.
    Never a pending, active or retiring key, nor a backend's last version. Lists what it did;
    safe to run as often as you like (a schedule runs it after rotating)."""
    config = _config(config_path)
    margin = config.rotation.prune_margin

    async def run() -> PruneReport:
        async with local_ring(config) as ring:
            return await pruning.prune(
                ring, backend_name, margin=margin, dry_run=dry_run, destroy_now=destroy_now
            )

    report = asyncio.run(run())
    if as_json:
        echo_json(report.to_json())
    else:
        _print_prune(report)
    if report.failed:
        raise CLIError(
            f"{len(report.failed)} version{'s' if len(report.failed) != 1 else ''} could not be"
            f" pruned: " + "; ".join(f"{s.version} ({s.backend}): {s.error}" for s in report.failed)
        )


PRUNE_VERBS = {
    "disable": ("disabled", "would disable"),
    "schedule_destruction": ("scheduled the destruction of", "would schedule the destruction of"),
    "destroy": ("destroyed", "would destroy"),
}


def _print_prune(report: PruneReport) -> None:
    where = ", ".join(report.backends)
    margin = format_duration(report.margin)
    if not report.done and not report.kept and not report.failed:
        click.echo(
            f"nothing to prune in backend{'s' if len(report.backends) != 1 else ''} {where}:"
            f" every version is in the JWKS or left it less than {margin} ago"
        )
    for step in report.done:
        done, would = PRUNE_VERBS[step.action]
        verb = would if report.dry_run else done
        click.echo(
            f"{verb} {step.version} (kid {step.kid}, backend {step.backend}; left the JWKS"
            f" {iso(step.published_until)})"
        )
    for step in report.kept:
        click.echo(f"kept {step.version} (kid {step.kid}, backend {step.backend}): {step.reason}")


@keys.command(cls=DashArgumentCommand)  # a kid may begin with "-"
@config_option
@click.argument("kid")
@json_option
def revoke(config_path: Path | None, kid: str, as_json: bool) -> None:
    """Emergency: stop KID from signing and from being published, on every replica.

    Every version with that kid is disabled, in every backend (the same key may be held twice:
    two files in a key directory, or one key in two backends). Each replica drops it at its next
    refresh. Verifiers that cached the JWKS keep accepting tokens it signed until their cache
    expires (jwks_max_age). A backend's last key is not revoked: rotate first."""
    config = _config(config_path)

    async def run() -> dict[str, Any]:
        async with local_ring(config) as ring:
            matches = ring.versions_of(kid)
            if not matches:
                raise CLIError(f"no key with kid {kid} in the ring")
            for name, backend in sorted({(k.backend_name, k.backend) for k in matches}):
                can_disable = refusal(backend, DisablesVersions) is None  # else said below
                if can_disable and all(k.kid == kid for k in ring.versions_in(name)):
                    raise CLIError(
                        f"revoking {kid} would leave backend {name} with no key versions, and a"
                        " backend that suddenly lists none is a fault to every replica, which"
                        " keeps the keys it had: rotate first (keysvc keys rotate --backend"
                        f" {name}; with no other key past its signs_from it signs at once),"
                        " then revoke"
                    )
            published_before = {k.kid for k in ring.view().published}
            disabled: list[dict[str, str]] = []
            failures: list[str] = []
            for key in matches:
                where = f"backend {key.backend_name} version {key.version.version_id}"
                backend = key.backend
                why_not = refusal(backend, DisablesVersions)
                if why_not is not None:
                    failures.append(why_not)
                    continue
                assert isinstance(backend, DisablesVersions)
                try:
                    await backend.disable_version(key.version)
                except (BackendError, ConfigError, OSError) as exc:
                    failures.append(f"{where}: {one_line(exc)}")
                else:
                    disabled.append({"backend": key.backend_name,
                                     "version": key.version.version_id})
            done = f"disabled {len(disabled)} of {len(matches)} versions of {kid}"
            try:
                await ring.refresh(raise_errors=True, quiet=True)
            except (BackendError, ConfigError, OSError) as exc:
                raise CLIError(f"{done}, then the ring could not be re-read: {one_line(exc)}"
                               ) from None
            # The outcome that counts is the ring's: a failure that left no copy (two backends
            # over one key directory, say) revoked nothing less.
            remaining = ring.versions_of(kid)
            if remaining:
                where = ", ".join(
                    f"backend {k.backend_name} version {k.version.version_id}" for k in remaining
                )
                why = "; ".join(failures) or "listed again after it was disabled"
                raise CLIError(f"{done}; still listed: {where} ({why})")
            signer = ring.view().signer
            if signer is not None:
                _warn_unseen_signer(signer, published_before, config)
            return {"revoked": kid, "backend": matches[0].backend_name,
                    "backends": sorted({k.backend_name for k in matches}),
                    "disabled_versions": len(disabled), "versions": disabled,
                    "signing_kid": signer.kid if signer else None}

    result = asyncio.run(run())
    if as_json:
        echo_json(result)
    else:
        count, backends = result["disabled_versions"], result["backends"]
        click.echo(f"revoked {kid} ({count} version{'s' if count != 1 else ''} disabled) in "
                   f"backend{'s' if len(backends) != 1 else ''} {', '.join(backends)}; "
                   f"now signing with {result['signing_kid'] or 'no key (add one!)'}")


@keys.command()
@click.option("--type", "key_type", type=click.Choice(keygen.KEY_TYPES), default="rsa-4096",
              show_default=True)
@click.option("--out", type=click.Path(path_type=Path), required=True,
              help="A file for the private key, or a key directory (named by creation time).")
@click.option("--public-out", type=click.Path(path_type=Path),
              help="Also write the PKIX public key here (otfd's --public-key-path).")
@json_option
def generate(key_type: str, out: Path, public_out: Path | None, as_json: bool) -> None:
    """Generate a private key file (mode 0600) for the file backend or otfd."""
    path = out / name_for(datetime.now(UTC)) if out.is_dir() else out
    _check_new_file(path, "a key")
    if public_out is not None:
        _check_new_file(public_out, "it")
        if public_out.resolve() == path.resolve():
            raise CLIError(f"--public-out {public_out} is the private key's path {path}")
    key = keygen.generate(key_type)  # type: ignore[arg-type]
    write_private_file(path, keygen.private_pem(key))
    if public_out is not None:
        try:
            write_atomically(public_out, keygen.public_pem(key.public_key()), 0o644)
        except BaseException:
            path.unlink(missing_ok=True)  # no private key without the public key asked for
            raise
    kid = jose.thumbprint(key.public_key())
    _warn_clouds(kid, jose.choose_algorithm(key.public_key(), None).value)
    if as_json:
        echo_json({"path": str(path), "public_path": str(public_out) if public_out else None,
                   "kid": kid, "type": key_type})
    else:
        also = f" and public key {public_out}" if public_out is not None else ""
        click.echo(f"wrote {path}{also} ({key_type}, kid {kid})")


def _check_new_file(path: Path, what: str) -> None:
    """Refuse a path that exists (or is a symlink, even a dangling one) or has no directory."""
    if path.exists() or path.is_symlink():
        raise CLIError(f"{path} exists; refusing to overwrite {what}")
    if not path.parent.is_dir():
        raise CLIError(f"directory {path.parent} does not exist")
