"""`keysvc doctor`: check an issuer, and optionally a cloud trust configuration, from outside.

Exit status: 0 when every check passes (warnings allowed), 1 when a check fails, 2 for bad input
(a malformed URL, an unreadable file, a trust configuration that is not valid JSON or CEL).

The trust checks judge the token the service would mint, so its `sub` follows the service's
`tokens.subject_format` (`--subject-format`, or `--config`), as the token minting spells it. The
issuer, publish lead and longest token lifetime likewise come from their flags or the service's
config (see keysvc.cli.loading.service_settings_options).
"""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import click

from keysvc import http_fetch, run_identity
from keysvc.cli.common import CLIError, echo_json, json_option
from keysvc.cli.loading import service_settings_options
from keysvc.clouds import ALL_CLOUDS, DEFAULT_AUDIENCE, Cloud
from keysvc.doctor import aws_trust, azure_trust, gcp_trust
from keysvc.doctor.findings import Finding, Status, fail, ok, skip
from keysvc.doctor.issuer_checks import IssuerCheckOptions, check_issuer
from keysvc.doctor.service_keys import ServiceKeys, fetch_service_keys
from keysvc.doctor.verdict import TrustInputError, Verdict
from keysvc.errors import ConfigError
from keysvc.issuer_url import InvalidIssuer, IssuerURL
from keysvc.run_identity import Run, RunIdentity
from keysvc.secrets import read_secret_file

GCP_PLACEHOLDER_AUDIENCE = (
    "//iam.googleapis.com/projects/0/locations/global/workloadIdentityPools/-/providers/-"
)
DEFAULT_WORKSPACE_ID = "ws-keysvcdoctor"
DEFAULT_RUN_ID = "run-keysvcdoctor"
_MARK = {Status.OK: "ok", Status.WARN: "warn", Status.FAIL: "FAIL", Status.SKIP: "skip"}


def _read(path: Path, what: str) -> str:
    try:
        return path.read_text()
    except OSError as exc:
        raise CLIError(f"{what} {path}: {exc.strerror}") from None


def _trust_finding(cloud: Cloud, verdict: Verdict) -> Finding:
    details = tuple(verdict.reasons[1:] + [f"note: {n}" for n in verdict.notes])
    check = f"trust.{cloud.value}"
    if verdict.accepted:
        return ok(
            check,
            f"{cloud.title} would accept the token: {verdict.reasons[0]}",
            cloud,
            details=details,
        )
    return fail(
        check, f"{cloud.title} would refuse the token: {verdict.reasons[0]}", cloud, details=details
    )


def _run_to_evaluate(
    issuer: IssuerURL,
    organization: str | None,
    workspace: str | None,
    phase: str | None,
    workspace_id: str | None,
    run_id: str | None,
    subject_format: str,
) -> tuple[RunIdentity, list[str]]:
    """The run whose token the trust checks evaluate (its audience is set per cloud), and
    notes on what about its subject doctor made up or cannot vouch for."""
    given = (("--organization", organization), ("--workspace", workspace), ("--phase", phase))
    missing = [name for name, value in given if not value]
    if missing:
        raise CLIError(f"evaluating a trust configuration needs {', '.join(missing)}")
    assert organization and workspace and phase
    try:
        run_identity.check_name("organization", organization)
        run_identity.check_name("workspace", workspace)
        for kind, value in (("workspace id", workspace_id), ("run id", run_id)):
            if value is not None:
                run_identity.check_name(kind, value)
    except run_identity.InvalidRunName as exc:
        raise CLIError(str(exc)) from None
    notes = []
    fields = run_identity.subject_fields(subject_format)
    for field, option, value, default in (
        ("workspace_id", "--workspace-id", workspace_id, DEFAULT_WORKSPACE_ID),
        ("run_id", "--run-id", run_id, DEFAULT_RUN_ID),
    ):
        if field in fields and value is None:
            notes.append(
                f"the subject format has {{{field}}} and doctor used {default!r};"
                f" give {option} to judge a real run"
            )
    run = Run(
        organization,
        workspace,
        workspace_id or DEFAULT_WORKSPACE_ID,
        run_id or DEFAULT_RUN_ID,
        phase,  # type: ignore[arg-type]  # one of PHASES (click.Choice)
    )
    return RunIdentity(issuer.url, "", run, subject_format), notes


def _trust_findings(
    issuer: IssuerURL,
    run: RunIdentity,
    audience: str | None,
    aws_policy: Path | None,
    azure_credential: Path | None,
    gcp_condition: str | None,
    run_notes: list[str],
) -> list[Finding]:
    """Evaluate each given trust configuration; unreadable input raises CLIError (exit 2)."""
    verdicts: list[tuple[Cloud, Verdict]] = []
    try:
        if aws_policy is not None:
            policy = aws_trust.load_policy(_read(aws_policy, "--aws-trust-policy"))
            aws_run = replace(run, audience=audience or DEFAULT_AUDIENCE[Cloud.AWS])
            verdicts.append((Cloud.AWS, aws_trust.evaluate(policy, aws_run, issuer)))
        if azure_credential is not None:
            credentials = azure_trust.load_credentials(
                _read(azure_credential, "--azure-credential")
            )
            azure_run = replace(run, audience=audience or DEFAULT_AUDIENCE[Cloud.AZURE])
            verdicts.append((Cloud.AZURE, azure_trust.evaluate(credentials, azure_run)))
        if gcp_condition is not None:
            gcp_run = replace(run, audience=audience or GCP_PLACEHOLDER_AUDIENCE)
            verdicts.append((Cloud.GCP, gcp_trust.evaluate(gcp_condition, gcp_run)))
    except TrustInputError as exc:
        raise CLIError(str(exc)) from None
    return [
        _trust_finding(cloud, replace(verdict, notes=verdict.notes + run_notes))
        for cloud, verdict in verdicts
    ]


async def _issuer_findings(
    issuer: IssuerURL,
    options: IssuerCheckOptions,
    ca_file: Path | None,
    timeout: float,
    api_url: str | None,
    client_token: str | None,
) -> list[Finding]:
    findings: list[Finding] = []
    async with http_fetch.session(ca_file, timeout) as client:
        if client_token is not None:
            service: ServiceKeys | None = None
            try:
                service = await fetch_service_keys(client, api_url or issuer.url, client_token)
            except http_fetch.FetchError as exc:
                findings.append(fail("service_keys", str(exc)))
            if service is not None:
                findings.append(ok("service_keys", f"/v1/keys lists {len(service.keys)} key(s)"))
                options = replace(
                    options,
                    publish_lead=options.publish_lead or service.publish_lead,
                    service_keys=service.keys,
                )
        findings += await check_issuer(issuer, client, options)
    return findings


def _render(issuer: IssuerURL, clouds: tuple[Cloud, ...], findings: list[Finding]) -> None:
    click.echo(f"keysvc doctor: {issuer.url} (for {', '.join(c.title for c in clouds)})")
    width = max((len(f.check) for f in findings), default=0)
    for finding in findings:
        click.echo(f"  {_MARK[finding.status]:<4}  {finding.check:<{width}}  {finding.message}")
        for detail in finding.details:
            click.echo(f"  {'':<4}  {'':<{width}}    - {detail}")
    counts = {s: sum(f.status is s for f in findings) for s in Status}
    click.echo(
        f"{counts[Status.FAIL]} failed, {counts[Status.WARN]} warning(s),"
        f" {counts[Status.OK]} ok, {counts[Status.SKIP]} skipped"
    )


@click.command()
@service_settings_options("issuer", "publish_lead", "max_ttl", "subject_format")
@click.option(
    "--cloud",
    "clouds",
    multiple=True,
    type=click.Choice([c.value for c in ALL_CLOUDS]),
    help="Judge for these clouds only (repeatable; default: all).",
)
@click.option(
    "--client-token-file",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Bearer token (scope keys:read) to read the publish lead and key list from /v1/keys.",
)
@click.option("--api-url", help="keysvc's API URL for /v1/keys (default: the issuer).")
@click.option(
    "--ca-file",
    type=click.Path(path_type=Path, dir_okay=False, exists=True),
    help="Extra CA bundle for TLS (the clouds themselves trust only public CAs).",
)
@click.option("--timeout", type=click.FloatRange(0.1, 120), default=10.0, show_default=True)
@click.option(
    "--aws-trust-policy",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Role trust policy JSON (or `aws iam get-role` output) to evaluate for the run.",
)
@click.option(
    "--azure-credential",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Federated identity credential(s) JSON to evaluate for the run.",
)
@click.option(
    "--gcp-condition", metavar="CEL", help="Workload identity provider attribute condition."
)
@click.option("--organization", help="Run to evaluate the trust for: organization.")
@click.option("--workspace", help="Run to evaluate the trust for: workspace.")
@click.option("--phase", type=click.Choice(run_identity.PHASES), help="Run phase.")
@click.option(
    "--workspace-id",
    help=f"The run's workspace id (default: {DEFAULT_WORKSPACE_ID}); in sub when the subject"
    " format has {workspace_id}.",
)
@click.option(
    "--run-id",
    help=f"The run's id (default: {DEFAULT_RUN_ID}); in sub when the subject format has {{run_id}}.",
)
@click.option("--audience", help="Token audience for the trust checks (default: the cloud's).")
@click.option("--no-fetch", is_flag=True, help="Only evaluate the trust configuration(s).")
@click.option(
    "--local",
    is_flag=True,
    help="Judge a development instance on 127.0.0.1/localhost (http allowed): the checks only"
    " the clouds make (https, port, public CA) are skipped, everything else is judged.",
)
@json_option
def doctor(
    issuer: str,
    clouds: tuple[str, ...],
    publish_lead: timedelta | None,
    max_ttl: timedelta | None,
    client_token_file: Path | None,
    api_url: str | None,
    ca_file: Path | None,
    timeout: float,
    aws_trust_policy: Path | None,
    azure_credential: Path | None,
    gcp_condition: str | None,
    organization: str | None,
    workspace: str | None,
    phase: str | None,
    workspace_id: str | None,
    run_id: str | None,
    subject_format: str,
    audience: str | None,
    no_fetch: bool,
    local: bool,
    as_json: bool,
) -> None:
    """Check what AWS, GCP and Azure will check about this issuer, and whether a trust
    configuration accepts the token of one run (--organization, --workspace, --phase)."""
    try:
        issuer_url = IssuerURL.parse(issuer, require_https=False)
    except InvalidIssuer as exc:
        raise CLIError(str(exc)) from None
    if local and not issuer_url.is_loopback:
        raise CLIError(
            f"--local judges an instance on this machine: {issuer_url.url} is not on"
            " 127.0.0.1, ::1 or localhost"
        )
    selected = tuple(Cloud(c) for c in clouds) or ALL_CLOUDS
    trust_given = any(x is not None for x in (aws_trust_policy, azure_credential, gcp_condition))
    findings: list[Finding] = []
    if trust_given:
        run, run_notes = _run_to_evaluate(
            issuer_url, organization, workspace, phase, workspace_id, run_id, subject_format
        )
        findings = _trust_findings(
            issuer_url, run, audience, aws_trust_policy, azure_credential, gcp_condition, run_notes
        )
    elif no_fetch:
        raise CLIError("--no-fetch leaves nothing to check without a trust configuration")
    client_token = None
    if client_token_file is not None:
        try:
            client_token = (
                read_secret_file(client_token_file, what="client token file").decode().strip()
            )
        except ConfigError as exc:
            raise CLIError(str(exc)) from None

    if not no_fetch:
        options = IssuerCheckOptions(
            clouds=selected,
            publish_lead=publish_lead,
            max_ttl=max_ttl,
            private_ca=ca_file is not None and not local,
            local=local,
        )
        try:
            findings = (
                asyncio.run(
                    _issuer_findings(issuer_url, options, ca_file, timeout, api_url, client_token)
                )
                + findings
            )
        except http_fetch.FetchError as exc:  # only a bad --ca-file gets here
            raise CLIError(str(exc)) from None
    findings = [f for f in findings if not f.clouds or set(f.clouds) & set(selected)]
    if not findings:
        findings = [skip("nothing", "no check applies to the selected clouds")]
    failed = any(f.status is Status.FAIL for f in findings)
    if as_json:
        echo_json(
            {
                "issuer": issuer_url.url,
                "clouds": [c.value for c in selected],
                "ok": not failed,
                "findings": [f.to_json() for f in findings],
            }
        )
    else:
        _render(issuer_url, selected, findings)
    if failed:
        # run_cli ignores a command's return value; SystemExit carries the status through click.
        raise SystemExit(1)
