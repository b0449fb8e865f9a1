"""The lookup order of reference/otf-compat.md, level by level, and OTF's boolean spellings."""

from __future__ import annotations

import pytest

from keysvc.creds import VariableError
from keysvc.creds.plan import make_plan
from keysvc.creds.variables import Settings, enabled_tags, parse_bool

ORDER = [
    "TFC_AWS_APPLY_ROLE_ARN_PROD",
    "TFC_DEFAULT_AWS_APPLY_ROLE_ARN",
    "TFC_AWS_RUN_ROLE_ARN_PROD",
    "TFC_DEFAULT_AWS_RUN_ROLE_ARN",  # HCP Terraform's form
    "TFC_DEFAULT_AWS_ROLE_ARN",  # OTF's form
]
IGNORED = {  # other phase, other tag, untagged value for a tagged configuration
    "TFC_AWS_PLAN_ROLE_ARN_PROD": "x",
    "TFC_DEFAULT_AWS_PLAN_ROLE_ARN": "x",
    "TFC_AWS_RUN_ROLE_ARN_OTHER": "x",
    "TFC_AWS_RUN_ROLE_ARN": "x",
    "TFC_AWS_APPLY_ROLE_ARN": "x",
}


@pytest.mark.parametrize("level", range(len(ORDER)), ids=ORDER)
def test_each_level_wins_over_the_ones_after_it(level: int) -> None:
    env = {**IGNORED, **{name: name for name in ORDER[level:]}}
    settings = Settings(env, "AWS", "PROD", "apply")
    assert settings.run_names("ROLE_ARN") == ORDER
    found = settings.require_run("ROLE_ARN")
    assert (found.name, found.value) == (ORDER[level], ORDER[level])


def test_empty_values_fall_through() -> None:
    env = {"TFC_AWS_APPLY_ROLE_ARN_PROD": "", "TFC_DEFAULT_AWS_ROLE_ARN": "otf"}
    assert Settings(env, "AWS", "PROD", "apply").require_run("ROLE_ARN").value == "otf"


def test_static_settings_and_audience() -> None:
    env = {
        "TFC_GCP_PROJECT_NUMBER_A": "1",
        "TFC_DEFAULT_GCP_PROJECT_NUMBER": "2",
        "TFC_DEFAULT_GCP_WORKLOAD_IDENTITY_AUDIENCE": "aud",
    }
    a, b = (Settings(env, "GCP", tag, "plan") for tag in ("A", "B"))
    assert a.static("PROJECT_NUMBER").value == "1"  # type: ignore[union-attr]
    assert b.static("PROJECT_NUMBER").value == "2"  # type: ignore[union-attr]
    assert a.audience("default") == "aud"
    assert Settings({}, "GCP", "", "plan").audience("default") == "default"


@pytest.mark.parametrize("value", ["1", "t", "T", "TRUE", "true", "True"])
def test_true_spellings(value: str) -> None:
    assert parse_bool("X", value) is True


@pytest.mark.parametrize("value", ["0", "f", "F", "FALSE", "false", "False"])
def test_false_spellings(value: str) -> None:
    assert parse_bool("X", value) is False


@pytest.mark.parametrize("value", ["yes", "on", " true", "tRuE", ""])
def test_other_values_are_errors(value: str) -> None:
    with pytest.raises(VariableError) as caught:
        parse_bool("TFC_AWS_PROVIDER_AUTH", value)
    assert caught.value.variable == "TFC_AWS_PROVIDER_AUTH"


def test_tags_default_first_and_case_kept() -> None:
    env = {
        "TFC_AWS_PROVIDER_AUTH_b": "true",
        "TFC_AWS_PROVIDER_AUTH": "true",
        "TFC_AWS_PROVIDER_AUTH_A_1": "true",
        "TFC_AWS_PROVIDER_AUTH_OFF": "false",
    }
    assert enabled_tags(env, "AWS") == ["", "A_1", "b"]


def test_plan_validates_everything_before_anything_else() -> None:
    """The first provider is valid, a later one is not: make_plan (pure) already fails."""
    env = {
        "TFC_AWS_PROVIDER_AUTH": "true",
        "TFC_AWS_RUN_ROLE_ARN": "r",
        "TFC_KUBERNETES_PROVIDER_AUTH": "true",
    }
    with pytest.raises(VariableError, match="TFC_KUBERNETES_WORKLOAD_IDENTITY_AUDIENCE"):
        make_plan(env, "plan")


# A value for every setting each provider reads (the GCP provider name in its three parts too)
EVERY_SETTING = {
    "TFC_AWS_RUN_ROLE_ARN": "arn:aws:iam::1:role/r",
    "TFC_AWS_WORKLOAD_IDENTITY_AUDIENCE": "aws.aud",
    "TFC_AZURE_RUN_CLIENT_ID": "00000000-0000-0000-0000-000000000001",
    "TFC_AZURE_WORKLOAD_IDENTITY_AUDIENCE": "azure.aud",
    "TFC_GCP_RUN_SERVICE_ACCOUNT_EMAIL": "t@p.iam.gserviceaccount.com",
    "TFC_GCP_PROJECT_NUMBER": "1",
    "TFC_GCP_WORKLOAD_POOL_ID": "pool",
    "TFC_GCP_WORKLOAD_PROVIDER_ID": "provider",
    "TFC_GCP_PRINCIPAL_TYPE": "service_account",
    "TFC_GCP_WORKLOAD_IDENTITY_AUDIENCE": "gcp.aud",
    "TFC_VAULT_ADDR": "https://vault.example.com:8200",
    "TFC_VAULT_RUN_ROLE": "role",
    "TFC_VAULT_AUTH_PATH": "jwt",
    "TFC_VAULT_NAMESPACE": "team",
    "TFC_VAULT_CLIENT_TIMEOUT": "30",
    "TFC_VAULT_WORKLOAD_IDENTITY_AUDIENCE": "vault.aud",
    "TFC_KUBERNETES_WORKLOAD_IDENTITY_AUDIENCE": "k8s.aud",
    "TFC_WORKLOAD_IDENTITY_AUDIENCE_MANUAL": "manual.aud",
}
SWITCHES = {
    f"TFC_{p}_PROVIDER_AUTH": "true" for p in ("AWS", "AZURE", "GCP", "VAULT", "KUBERNETES")
}


def test_every_setting_passes_as_given() -> None:
    plan = make_plan({**SWITCHES, **EVERY_SETTING}, "plan")
    assert [p.provider for p in plan.providers] == ["aws", "azure", "gcp", "vault", "kubernetes"]
    assert [m.audience for m in plan.manual] == ["manual.aud"]


@pytest.mark.parametrize("name", sorted(EVERY_SETTING))
@pytest.mark.parametrize("bad", ["\n", "\r", "\0", "\x1b", "\u2028", "\u202e", "\udcff"])
def test_every_setting_gets_the_one_line_check(name: str, bad: str) -> None:
    """A newline, a control or invisible character, or an undecodable byte, appended to any
    one setting (the others valid) is refused, naming that setting and not showing the value."""
    env = {**SWITCHES, **EVERY_SETTING, name: EVERY_SETTING[name] + bad + "x-private"}
    with pytest.raises(VariableError) as caught:
        make_plan(env, "plan")
    assert caught.value.variable == name
    assert "must be a single line of printable characters" in str(caught.value)
    assert "x-private" not in str(caught.value) and bad not in str(caught.value)
