"""Evaluate a GCP workload identity provider's attribute condition for one run's token.

GCP evaluates the CEL condition with `assertion` (the token's claims), `google` and `attribute`
(the mapped attributes). doctor maps them the way `keysvc setup gcp` configures the provider, so
a condition written for that mapping is judged as GCP would; the CEL itself runs in cel-python.
"""

from __future__ import annotations

from typing import Any

from keysvc.clouds import GCP_MAX_CONDITION_CHARS, GCP_MAX_SUBJECT_BYTES
from keysvc.cloudsetup.gcp import ATTRIBUTE_MAPPING
from keysvc.doctor.verdict import TrustInputError, Verdict
from keysvc.run_identity import RunIdentity


def mapped_attributes(claims: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(google, attribute) as the setup mapping derives them: each maps `assertion.<claim>`."""
    google: dict[str, Any] = {}
    attribute: dict[str, Any] = {}
    for target, source in ATTRIBUTE_MAPPING.items():
        namespace, name = target.split(".", 1)
        value = claims.get(source.removeprefix("assertion."))
        (google if namespace == "google" else attribute)[name] = value
    return google, attribute


def _celpy() -> Any:
    try:
        import celpy
    except ImportError:
        raise TrustInputError(
            "evaluating a GCP condition needs cel-python: pip install 'keysvc[doctor]'"
        ) from None
    return celpy


def compile_condition(expression: str) -> Any:
    """Parse the CEL once; a syntax error is bad input (GCP would refuse to save it)."""
    if not expression.strip():
        raise TrustInputError("the GCP attribute condition is empty")
    celpy = _celpy()
    environment = celpy.Environment()
    try:
        return environment.program(environment.compile(expression))
    except celpy.CELParseError as exc:
        first = str(exc).splitlines()[0] if str(exc) else "syntax error"
        raise TrustInputError(f"the GCP attribute condition is not valid CEL: {first}") from None


def describe_eval_error(exc: Exception) -> str:
    """cel-python's evaluation error in words: its message, without the Python exception class
    and argument tuple it carries (`("no such member…", <class 'KeyError'>, None)`)."""
    args = getattr(exc, "args", ())
    message = args[0] if args and isinstance(args[0], str) else type(exc).__name__
    cause = args[1] if len(args) > 1 else None
    if message.startswith("no such member"):
        return f"{message} (the token carries no such claim or attribute)"
    if message.startswith("found no matching overload") or message == "no such overload":
        return "an operator or function is applied to values of the wrong type"
    if cause is ZeroDivisionError:
        return "division by zero"
    return message.splitlines()[0]


def evaluate(expression: str, run: RunIdentity) -> Verdict:
    """Would GCP's token exchange accept this run's token under the condition?"""
    program = compile_condition(expression)
    celpy = _celpy()
    claims = run.claims()
    google, attribute = mapped_attributes(claims)
    reasons: list[str] = []
    notes = [
        "GCP also checks the token's aud against allowed_audiences (or the provider's name)",
        "the service account binding must include this principal (roles/iam.workloadIdentityUser)",
    ]
    if len(expression) > GCP_MAX_CONDITION_CHARS:
        reasons.append(f"the condition is over GCP's {GCP_MAX_CONDITION_CHARS} characters")
    if len(run.subject.encode()) > GCP_MAX_SUBJECT_BYTES:
        reasons.append(
            f"google.subject ({run.subject!r}) is over GCP's {GCP_MAX_SUBJECT_BYTES} bytes"
        )
    # cel-python reads `google.` as the protobuf package namespace, so the google attributes are
    # bound under their dotted names, which it resolves first.
    activation = {
        "assertion": celpy.json_to_cel(claims),
        "attribute": celpy.json_to_cel(attribute),
        **{f"google.{name}": celpy.json_to_cel(value) for name, value in google.items()},
    }
    try:
        result = program.evaluate(activation)
    except Exception as exc:  # noqa: BLE001 - cel-python raises assorted types for eval errors
        result = exc
    if isinstance(result, Exception):
        reasons.append(
            f"the condition fails to evaluate: {describe_eval_error(result)}; GCP refuses the"
            " token"
        )
    elif not isinstance(result, celpy.celtypes.BoolType):
        reasons.append(f"the condition yields {type(result).__name__}, not a bool")
    elif not bool(result):
        reasons.append(f"the condition is false for {run.subject!r}")
    if reasons:
        return Verdict(False, reasons, notes)
    return Verdict(True, [f"the condition holds for {run.subject!r}"], notes)
