"""Evaluate Entra federated identity credentials against the token keysvc would issue for a run.

Entra compares `issuer` and `subject` with the token exactly (case-sensitive, no wildcards) and
needs the token's `aud` among the credential's `audiences`. The file may hold one credential, a
list (`az ad app federated-credential list`) or a Graph API page (`{"value": [...]}`).
"""

from __future__ import annotations

import json
from typing import Any

from keysvc.doctor.verdict import TrustInputError, Verdict
from keysvc.run_identity import RunIdentity


def load_credentials(text: str) -> list[dict[str, Any]]:
    try:
        data: Any = json.loads(text)
    except json.JSONDecodeError as exc:
        raise TrustInputError(f"the federated credential file is not JSON: {exc}") from None
    if isinstance(data, dict) and isinstance(data.get("value"), list):
        data = data["value"]
    credentials = data if isinstance(data, list) else [data]
    for index, credential in enumerate(credentials):
        if not isinstance(credential, dict) or not isinstance(credential.get("issuer"), str):
            raise TrustInputError(f"federated credential {index} has no issuer")
        if not isinstance(credential.get("audiences", []), list):
            raise TrustInputError(f"federated credential {index}: audiences must be a list")
    if not credentials:
        raise TrustInputError("the file holds no federated credential")
    return credentials


def _label(index: int, credential: dict[str, Any]) -> str:
    name = credential.get("name") or credential.get("displayName")
    return f"credential {index}" + (f" ({name})" if name else "")


def _differences(credential: dict[str, Any], run: RunIdentity) -> list[str]:
    problems = []
    issuer = credential["issuer"]
    if issuer != run.issuer:
        hint = ""
        if issuer.rstrip("/") == run.issuer.rstrip("/"):
            hint = " (only a trailing slash differs, and Entra compares exactly)"
        elif issuer.lower() == run.issuer.lower():
            hint = " (only letter case differs, and Entra compares exactly)"
        problems.append(f"issuer {issuer!r} is not the token's {run.issuer!r}{hint}")
    subject = credential.get("subject")
    if subject is None:
        if credential.get("claimsMatchingExpression"):
            problems.append("it matches claims with an expression, which doctor does not evaluate")
        else:
            problems.append("it has no subject")
    elif subject != run.subject:
        hint = ""
        if "*" in subject:
            hint = " (Entra has no wildcards: one credential per workspace and phase)"
        elif subject.lower() == run.subject.lower():
            hint = " (only letter case differs, and Entra compares exactly)"
        elif ":project:" in subject:
            hint = " (OTF subjects have no project segment)"
        problems.append(f"subject {subject!r} is not the token's {run.subject!r}{hint}")
    audiences = credential.get("audiences", [])
    if run.audience not in audiences:
        problems.append(f"audiences {audiences} do not include the token's {run.audience!r}")
    return problems


def evaluate(credentials: list[dict[str, Any]], run: RunIdentity) -> Verdict:
    """Would Entra exchange this run's token for the application's access token?"""
    refusals = []
    for index, credential in enumerate(credentials):
        problems = _differences(credential, run)
        if not problems:
            return Verdict(
                True,
                [f"{_label(index, credential)} matches issuer, subject and audience"],
                ["Entra accepts only RS256 tokens: the signing key must be RSA"],
            )
        refusals.append(f"{_label(index, credential)}: " + "; ".join(problems))
    return Verdict(False, refusals)
