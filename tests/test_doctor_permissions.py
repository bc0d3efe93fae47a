"""``mlops-bot doctor`` names each permission the configured features need and whether the
credential has it, against the emulators of GitHub (classic token, fine-grained token, App
installation), Azure DevOps (PAT scopes) and Slack (bot token scopes): a credential missing one
permission makes doctor name it with the fix and exit non-zero; a complete one passes."""

from __future__ import annotations

import os
import sys
import tempfile

if "azure.devops" not in sys.modules:  # read by azure-devops at import: keep its cache out of ~
    os.environ["AZURE_DEVOPS_CACHE_DIR"] = tempfile.mkdtemp(prefix="ado-cache-")

import pytest
from click.testing import CliRunner

from bot.cli import cli
from tests.conftest import PROJECT
from tests.emulators.fixtures import (  # noqa: F401
    azure_devops_emulator,
    github_emulator,
    slack_emulator,
)
from tests.emulators.github import DEFAULT_PERMISSIONS
from tests.emulators.slack import DEFAULT_SCOPES

REPO = "acme/churn"
SLACK_CHANNELS = ("mlops-pipeline", "mlops-alerts", "mlops-digest")


@pytest.fixture
def doctor(repo, tmp_path, monkeypatch):
    """Run ``mlops-bot doctor`` with these settings (on top of the project and a data folder)."""
    monkeypatch.chdir(tmp_path)

    def run(**env: str):
        base = {"MLOPS_PROJECT_DIR": str(repo / PROJECT), "MLOPS_DATA_DIR": str(tmp_path / "state")}
        for name, value in {**base, **env}.items():
            monkeypatch.setenv(name, value)
        return CliRunner().invoke(cli, ["doctor"])

    return run


def _lines(output: str, marker: str) -> list[str]:
    return [line for line in output.splitlines() if line.startswith(marker) and " permission " in line]


# --- GitHub ------------------------------------------------------------------------------------


@pytest.fixture
def github(github_emulator):  # noqa: F811
    github_emulator.state.add_repo(REPO, private=True)
    for login in ("mlops-bot[bot]", "narrow-bot", "full-bot", "classic-bot"):  # the tokens' users may write
        github_emulator.state.add_collaborator(REPO, login, "write")
    return github_emulator


def _github_env(github, token: str) -> dict[str, str]:
    return {"GITHUB_REPOSITORY": REPO, "GITHUB_TOKEN": token, "GITHUB_API_URL": github.base_url}


def test_a_fine_grained_token_without_issues_is_named_and_fails(github, doctor):
    github.add_token("github_pat_narrow", "narrow-bot", permissions={**DEFAULT_PERMISSIONS, "issues": "none"})
    result = doctor(**_github_env(github, "github_pat_narrow"))
    assert result.exit_code == 1, result.output
    (missing,) = _lines(result.output, "✗")
    assert missing.startswith("✗ GitHub permission Issues: Read and write, issues=write (for retrain tickets")
    fix = result.output.split(missing, 1)[1].splitlines()[1]
    assert fix.strip().startswith("fix: a read needing it was refused (issues=read)") and "Fine-grained tokens" in fix
    assert "github_pat_narrow" not in result.output


def test_a_complete_fine_grained_token_passes_and_says_what_only_a_write_would_show(github, doctor):
    github.add_token("github_pat_full", "full-bot", permissions=DEFAULT_PERMISSIONS)
    result = doctor(**_github_env(github, "github_pat_full"))
    assert result.exit_code == 0, result.output
    assert _lines(result.output, "✗") == []
    granted = " ".join(_lines(result.output, "✓"))
    assert "metadata=read" in granted and "contents=read" in granted
    unchecked = " ".join(_lines(result.output, "?"))
    for permission in ("issues=write", "pull_requests=write", "statuses=write"):
        assert permission in unchecked


def test_a_classic_token_without_repo_on_a_private_repository_is_named(github, doctor):
    github.add_token("ghp_public_only", "classic-bot", scopes=("public_repo",))
    result = doctor(**_github_env(github, "ghp_public_only"))
    assert result.exit_code == 1
    assert any(line.startswith("✗ GitHub permission classic token scope repo, repo") for line in
               _lines(result.output, "✗")), result.output
    assert "(it has public_repo); grant it the 'repo' scope" in result.output  # GitHub hid the repository
    assert "1 problem(s) found" in result.output  # the missing scope once, not again as a repository problem
    github.set_scopes("ghp_public_only", ["repo"])
    healthy = doctor(**_github_env(github, "ghp_public_only"))
    assert healthy.exit_code == 0, healthy.output
    assert _lines(healthy.output, "✓") == [
        "✓ GitHub permission classic token scope repo, repo (for issues, comments, reactions and commit statuses)"]


def test_an_app_installation_is_checked_against_what_github_says_it_holds(github, doctor):
    from tests.test_github_bot import _rsa_pem

    private, public = _rsa_pem()
    github.add_app(42, slug="acme-mlops", public_key=public)
    github.add_installation(4242, app_id=42, permissions={**DEFAULT_PERMISSIONS, "statuses": "read"})
    env = {"GITHUB_REPOSITORY": REPO, "GITHUB_API_URL": github.base_url, "GITHUB_APP_ID": "42",
           "GITHUB_APP_PRIVATE_KEY": private.replace("\n", "\\n"), "GITHUB_APP_INSTALLATION_ID": "4242",
           "MLOPS_BOT_NAME": "acme-mlops"}
    result = doctor(**env)
    assert result.exit_code == 1, result.output
    (missing,) = _lines(result.output, "✗")
    assert missing.startswith("✗ GitHub permission Commit statuses: Read and write, statuses=write")
    assert "the App installation holds statuses=read" in result.output
    github.add_installation(4242, app_id=42, permissions=DEFAULT_PERMISSIONS)  # the owner accepts it
    healthy = doctor(**env)
    assert healthy.exit_code == 0, healthy.output
    assert len(_lines(healthy.output, "✓")) == 5 and _lines(healthy.output, "?") == []


# --- Azure DevOps ------------------------------------------------------------------------------



def _azure_env(ado, pat: str) -> dict[str, str]:
    return {"AZURE_DEVOPS_ORG_URL": ado.base_url, "AZURE_DEVOPS_EXT_PAT": pat, "AZURE_DEVOPS_PROJECT": "proj",
            "MLOPS_AZURE_REPOSITORY": "model", "MLOPS_AZURE_PIPELINE_ID": "1"}


def test_a_pat_with_every_scope_passes_and_the_unprovable_writes_are_said(ado, doctor):
    result = doctor(**_azure_env(ado, ado.pat))
    assert result.exit_code == 0, result.output
    granted = _lines(result.output, "✓")
    assert [line.split(" (for")[0] for line in granted] == [
        "✓ Azure DevOps permission Work Items (Read), vso.work",
        "✓ Azure DevOps permission Work Items (Read & write), vso.work_write",
        "✓ Azure DevOps permission Code (Read), vso.code",
        "✓ Azure DevOps permission Build (Read), vso.build"]
    unchecked = " ".join(_lines(result.output, "?"))
    for scope in ("vso.code_write", "vso.code_status", "vso.build_execute"):
        assert scope in unchecked
    assert "offers no dry run" in result.output


def test_a_pat_without_work_items_write_is_named_with_where_to_add_it(ado, doctor):
    ado.add_pat("boards-read", "mlops-bot@example.com", scopes=["vso.work", "vso.code_write", "vso.build_execute"])
    result = doctor(**_azure_env(ado, "boards-read"))
    assert result.exit_code == 1
    (missing,) = _lines(result.output, "✗")
    assert missing.startswith("✗ Azure DevOps permission Work Items (Read & write), vso.work_write (for opening")
    assert f"create a PAT with it at {ado.base_url}/_usersSettings/tokens" in result.output
    assert "boards-read" not in result.output


# --- Slack -------------------------------------------------------------------------------------


@pytest.fixture
def slack(slack_emulator):  # noqa: F811
    for name in SLACK_CHANNELS:
        slack_emulator.state.add_channel(name)
    return slack_emulator


def test_a_slack_token_without_files_write_is_named_and_a_full_one_passes(slack, doctor):
    slack.add_token("xoxb-no-files", "mlops-bot", scopes=tuple(s for s in DEFAULT_SCOPES if s != "files:write"),
                    bot=True)
    result = doctor(SLACK_BOT_TOKEN="xoxb-no-files", MLOPS_SLACK_API_URL=slack.base_url)
    assert result.exit_code == 1, result.output
    (missing,) = _lines(result.output, "✗")
    assert missing == "✗ Slack permission files:write (for uploading charts): missing"
    assert "Bot Token Scopes on api.slack.com/apps" in result.output
    assert "1 problem(s) found" in result.output

    slack.add_token("xoxb-blind", "mlops-bot", scopes=tuple(s for s in DEFAULT_SCOPES if s != "channels:read"),
                    bot=True)
    blind = doctor(SLACK_BOT_TOKEN="xoxb-blind", MLOPS_SLACK_API_URL=slack.base_url)
    # one missing scope is one problem, not one more for each channel it keeps doctor from looking up
    assert _lines(blind.output, "✗") == ["✗ Slack permission channels:read (for finding channels by name): missing"]
    assert "1 problem(s) found" in blind.output

    healthy = doctor(SLACK_BOT_TOKEN=slack.token, MLOPS_SLACK_API_URL=slack.base_url)
    assert healthy.exit_code == 0, healthy.output
    assert [line.split(" (for")[0] for line in _lines(healthy.output, "✓")] == [
        f"✓ Slack permission {scope}" for scope in
        ("chat:write", "channels:read", "channels:history", "files:write", "reactions:write")]
