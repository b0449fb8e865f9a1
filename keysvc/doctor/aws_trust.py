"""Evaluate an AWS role trust policy against the token keysvc would issue for one run.

This follows IAM's policy evaluation for `sts:AssumeRoleWithWebIdentity`: an explicit Deny wins,
otherwise some Allow statement must match the federated principal (the issuer's OIDC provider),
the action and every condition. Conditions on the token's claims (`<issuer host>:aud`,
`<issuer host>:sub`) are evaluated with IAM's operators, including `StringLike`'s `*` and `?`
wildcards, the `IfExists` suffix and the `ForAnyValue:`/`ForAllValues:` set operators; condition
keys that depend on the request rather than the token are reported, not guessed.
"""

from __future__ import annotations

import json
import re
from typing import Any
from urllib.parse import unquote

from keysvc.doctor.verdict import TrustInputError, Verdict
from keysvc.issuer_url import IssuerURL
from keysvc.run_identity import RunIdentity

ACTION = "sts:AssumeRoleWithWebIdentity"
_STRING_OPERATORS = {
    # operator: (negated, ignore case, wildcards)
    "StringEquals": (False, False, False),
    "StringNotEquals": (True, False, False),
    "StringEqualsIgnoreCase": (False, True, False),
    "StringNotEqualsIgnoreCase": (True, True, False),
    "StringLike": (False, False, True),
    "StringNotLike": (True, False, True),
}


def load_policy(text: str) -> dict[str, Any]:
    """Read a trust policy: the policy document itself, `aws iam get-role` output, or the policy
    as a JSON (or URL-encoded JSON) string, as Terraform state and the raw API show it."""
    try:
        data: Any = json.loads(text)
    except json.JSONDecodeError as exc:
        raise TrustInputError(f"the trust policy is not JSON: {exc}") from None
    if isinstance(data, dict) and isinstance(data.get("Role"), dict):
        data = data["Role"].get("AssumeRolePolicyDocument")
    if isinstance(data, str):
        try:
            data = json.loads(unquote(data) if data.lstrip().startswith("%7B") else data)
        except json.JSONDecodeError as exc:
            raise TrustInputError(f"the embedded trust policy is not JSON: {exc}") from None
    if not isinstance(data, dict) or "Statement" not in data:
        raise TrustInputError("the trust policy has no Statement")
    statements = data["Statement"]
    if isinstance(statements, dict):
        statements = [statements]
    if not isinstance(statements, list) or not all(isinstance(s, dict) for s in statements):
        raise TrustInputError("the trust policy's Statement must be an object or a list of them")
    return {**data, "Statement": statements}


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


def _like(pattern: str, value: str, ignore_case: bool = False) -> bool:
    regex = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.fullmatch(regex, value, re.DOTALL | (re.IGNORECASE if ignore_case else 0)) is not None


def _name(index: int, statement: dict[str, Any]) -> str:
    sid = statement.get("Sid")
    return f"statement {index}" + (f" ({sid})" if sid else "")


class _Evaluator:
    def __init__(self, run: RunIdentity, issuer: IssuerURL) -> None:
        self.host = issuer.host_and_path
        self.context = {
            f"{self.host}:aud".lower(): run.audience,
            f"{self.host}:sub".lower(): run.subject,
        }
        self.notes: list[str] = []

    def principal(self, statement: dict[str, Any]) -> str | None:
        """None when the statement names the issuer's OIDC provider, else why not."""
        if "NotPrincipal" in statement:
            self.notes.append("NotPrincipal is not evaluated")
            return None
        principal = statement.get("Principal")
        if principal == "*":
            return None
        if not isinstance(principal, dict) or "Federated" not in principal:
            return "its principal is not a Federated (OIDC provider) principal"
        arns = [str(a) for a in _as_list(principal["Federated"])]
        if any(a == "*" or a.endswith(f":oidc-provider/{self.host}") for a in arns):
            return None
        return f"its Federated principal {', '.join(arns)} is not the OIDC provider for {self.host}"

    def action(self, statement: dict[str, Any]) -> str | None:
        if "NotAction" in statement:
            excluded = [str(a) for a in _as_list(statement["NotAction"])]
            if any(_like(a, ACTION, ignore_case=True) for a in excluded):
                return f"its NotAction excludes {ACTION}"
            return None
        actions = [str(a) for a in _as_list(statement.get("Action"))]
        if any(_like(a, ACTION, ignore_case=True) for a in actions):
            return None
        return f"its Action {', '.join(actions) or '(none)'} does not include {ACTION}"

    def conditions(self, statement: dict[str, Any]) -> str | None:
        block = statement.get("Condition", {})
        if not isinstance(block, dict):
            raise TrustInputError("a Condition must be an object")
        for operator, entries in block.items():
            if not isinstance(entries, dict):
                raise TrustInputError(f"condition {operator} must map keys to values")
            for key, values in entries.items():
                failure = self.condition(
                    str(operator), str(key), [str(v) for v in _as_list(values)]
                )
                if failure:
                    return failure
        return None

    def condition(self, operator: str, key: str, values: list[str]) -> str | None:
        base, set_operator, if_exists = operator, None, False
        if ":" in base:
            set_operator, base = base.split(":", 1)
        if base.endswith("IfExists"):
            base, if_exists = base[: -len("IfExists")], True
        present = key.lower() in self.context
        actual = self.context.get(key.lower())
        shown = f"{operator} {key} {values}"
        if base == "Null":
            wants_missing = [v.lower() for v in values] == ["true"]
            return None if present != wants_missing else f"{shown} does not hold"
        if base not in _STRING_OPERATORS:
            self.notes.append(f"condition {shown} is not evaluated (assumed to hold)")
            return None
        if not present:
            if key.lower().startswith(("aws:", "sts:")):
                self.notes.append(f"condition {shown} depends on the request (assumed to hold)")
                return None
            negated = _STRING_OPERATORS[base][0]
            if if_exists or set_operator == "ForAllValues":
                return None
            if negated and set_operator != "ForAnyValue":
                return None
            return (
                f"{shown}: a token from {self.host} has no {key}"
                " (condition keys are the issuer host and path, then :aud or :sub)"
            )
        negated, ignore_case, wildcards = _STRING_OPERATORS[base]
        assert actual is not None
        if wildcards:
            matched = any(_like(v, actual, ignore_case) for v in values)
        elif ignore_case:
            matched = actual.lower() in (v.lower() for v in values)
        else:
            matched = actual in values
        if matched != negated:
            return None
        verb = "matches" if negated else "does not match"
        return f"{shown} {verb} {actual!r}"


def evaluate(policy: dict[str, Any], run: RunIdentity, issuer: IssuerURL) -> Verdict:
    """Would STS let this run's token assume the role? Reasons name the deciding statements."""
    evaluator = _Evaluator(run, issuer)
    allowed_by: list[str] = []
    refusals: list[str] = []
    for index, statement in enumerate(policy["Statement"]):
        effect = statement.get("Effect")
        if effect not in ("Allow", "Deny"):
            raise TrustInputError(f"{_name(index, statement)}: Effect must be Allow or Deny")
        failure = (
            evaluator.principal(statement)
            or evaluator.action(statement)
            or evaluator.conditions(statement)
        )
        if effect == "Deny" and failure is None:
            return Verdict(
                False,
                [f"{_name(index, statement)} denies it explicitly"],
                evaluator.notes,
            )
        if effect == "Allow":
            if failure is None:
                allowed_by.append(_name(index, statement))
            else:
                refusals.append(f"{_name(index, statement)} does not apply: {failure}")
    notes = evaluator.notes + [
        f"STS also requires {run.audience!r} in the OIDC provider's client ID list"
    ]
    if allowed_by:
        return Verdict(True, [f"allowed by {', '.join(allowed_by)}"], notes)
    return Verdict(False, refusals or ["no statement allows it"], notes)
