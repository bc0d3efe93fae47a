"""Which permissions the bot's features need from each service, and whether its credential has them.

``mlops-bot doctor`` shows one line per permission: granted, missing (with how to grant it), or not
checkable without writing (with what to make sure of). How each service lets a credential be checked:

- GitHub. A classic token lists its scopes in ``X-OAuth-Scopes`` on every answer. An App
  installation says what it holds in the answer to ``POST /app/installations/{id}/access_tokens``
  (its ``permissions``), which the bot makes anyway to act as the installation. A fine-grained
  token says nothing: each permission is probed with a harmless read (list one issue, one pull
  request, one commit, the default branch's statuses, the workflows); GitHub refuses a read the
  token lacks with 403 and ``X-Accepted-GitHub-Permissions``, or 404 on a private repository. A
  read that goes through proves read access only, and on a public repository not even that (its
  reads need no permission), so write access is reported as not checkable.
- Azure DevOps. A PAT's scopes cannot be listed with the PAT itself; each is proven by a read that
  needs it, and Work Items (Read & write) by a work item creation with ``validateOnly``, which the
  service checks and does not save. The other writes (pull request threads, statuses, pipeline
  runs) have no such dry run: reported as not checkable.
- Slack. A bot token lists its scopes in ``x-oauth-scopes`` on every answer (``auth.test`` here).

This module reads through the adapters' public clients only; it never writes.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from integrations.ports import PermanentError, PermissionRefused, TransientError

__all__ = [
    "GITHUB_PERMISSION_NAMES",
    "SLACK_SCOPE_USES",
    "PermissionCheck",
    "azure_devops_permissions",
    "github_installation_permissions",
    "github_needs",
    "github_permissions",
    "slack_needs",
    "slack_permissions",
]

State = Literal["granted", "missing", "unchecked"]


@dataclass(frozen=True)
class PermissionCheck:
    """One permission a feature needs: ``permission`` in the service's words (``issues=write``,
    ``vso.work_write``, ``chat:write``), ``label`` as its settings page shows it, ``needed_for``
    the features that use it, ``state``, and ``fix``: how to grant it (missing) or what to make sure
    of (unchecked)."""

    service: str
    permission: str
    label: str
    needed_for: str
    state: State
    fix: str = ""

    @property
    def name(self) -> str:
        shown = self.permission if self.label == self.permission else f"{self.label}, {self.permission}"
        return f"{self.service} permission {shown} (for {self.needed_for})"


# ---------------------------------------------------------------------------
# GitHub

#: GitHub's names of the fine-grained permissions and their levels, as its settings pages show them
GITHUB_PERMISSION_NAMES = {
    "actions": "Actions", "checks": "Checks", "contents": "Contents", "issues": "Issues", "metadata": "Metadata",
    "pull_requests": "Pull requests", "statuses": "Commit statuses", "workflows": "Workflows",
}
_GITHUB_LEVELS = {"none": 0, "read": 1, "write": 2, "admin": 3}
_GITHUB_LEVEL_NAMES = {"read": "Read-only", "write": "Read and write"}
#: a harmless read that needs each permission (path after /repos/{owner}/{repo}, its query); the
#: default branch's head commit for Contents and its statuses for Commit statuses
_GITHUB_PROBES: dict[str, tuple[str, dict[str, Any]]] = {
    "issues": ("/issues", {"per_page": 1, "state": "all"}),
    "pull_requests": ("/pulls", {"per_page": 1, "state": "all"}),
    "contents": ("/commits/{branch}", {}),
    "statuses": ("/commits/{branch}/statuses", {"per_page": 1}),
    "actions": ("/actions/workflows", {"per_page": 1}),
}
_GITHUB_SETTINGS = ("grant it in the fine-grained token's repository permissions (github.com → Settings → "
                    "Developer settings → Fine-grained tokens), or in the GitHub App's permissions, then accept "
                    "the change on its installation")


class GitHubRepositoryCalls(Protocol):
    """What the GitHub adapter's client offers this module: one REST call on the repository."""

    repo_name: str

    def call(self, verb: str, path: str, *, params: dict | None = None, budgeted: bool = True,
             **options: Any) -> tuple[dict, Any]: ...


def github_needs(*, actions: bool) -> list[tuple[str, str, str]]:
    """(permission, level, what for) the bot's GitHub features need; Actions only when it trains there."""
    needs = [
        ("metadata", "read", "finding the repository and commenters' roles"),
        ("issues", "write", "retrain tickets, comments and reactions on issues"),
        ("pull_requests", "write", "reading merged pull requests, comments and reactions on them"),
        ("statuses", "write", "commit statuses"),
        ("contents", "read", "fetching a pull request's code"),
    ]
    if actions:
        needs.append(("actions", "write", "training on GitHub Actions (MLOPS_GITHUB_WORKFLOW)"))
    return needs


def github_installation_permissions(app_id: str, private_key: str, installation_id: int, *,
                                    base_url: str) -> dict[str, str]:
    """What a GitHub App installation holds, as GitHub says when it issues an installation token."""
    from github import Auth, GithubIntegration

    integration = GithubIntegration(auth=Auth.AppAuth(app_id, private_key), base_url=base_url.rstrip("/"))
    try:
        return {str(k): str(v) for k, v in (integration.get_access_token(int(installation_id)).permissions or {}).items()}
    finally:
        integration.close()


def github_permissions(client: GitHubRepositoryCalls, *, actions: bool,
                       installation: Mapping[str, str] | None = None) -> list[PermissionCheck]:
    """One check per permission in ``github_needs``: against the installation's ``installation``
    permissions (an App), the token's ``X-OAuth-Scopes`` (classic) or probing reads (fine-grained)."""
    needs = github_needs(actions=actions)
    try:
        headers, repository = client.call("GET", "", budgeted=False)
    except PermissionRefused as refused:  # hidden from the token or installation: nothing else can be read
        classic = "=" not in refused.permission  # a classic token's scope ("repo"), not a permission
        return [PermissionCheck("GitHub", refused.permission, _github_label(refused.permission),
                                "everything on a private repository" if classic else needs[0][2], "missing",
                                str(refused))]
    headers = {str(k).lower(): v for k, v in (headers or {}).items()}
    if installation is not None:
        return [_github_held(name, level, why, installation.get(name, "none")) for name, level, why in needs]
    if "x-oauth-scopes" in headers:
        return _github_classic(headers["x-oauth-scopes"], bool((repository or {}).get("private")), actions)
    branch = str((repository or {}).get("default_branch") or "main")
    return [_github_probe(client, name, level, why, branch=branch, private=bool((repository or {}).get("private")))
            for name, level, why in needs]


def _github_label(permission: str) -> str:
    if "=" not in permission:
        return f"classic token scope {permission}"
    name, _, level = permission.partition("=")
    return f"{GITHUB_PERMISSION_NAMES.get(name, name)}: {_GITHUB_LEVEL_NAMES.get(level, level)}"


def _github_held(name: str, level: str, why: str, held: str) -> PermissionCheck:
    permission = f"{name}={level}"
    if _GITHUB_LEVELS.get(held, 0) >= _GITHUB_LEVELS[level]:
        return PermissionCheck("GitHub", permission, _github_label(permission), why, "granted")
    return PermissionCheck("GitHub", permission, _github_label(permission), why, "missing",
                           f"the App installation holds {name}={held}; {_GITHUB_SETTINGS}")


def _github_classic(scopes: str, private: bool, actions: bool) -> list[PermissionCheck]:
    granted = {scope.strip() for scope in str(scopes).split(",") if scope.strip()}
    # A private repository needs ``repo`` for anything; a public one ``public_repo`` (or ``repo``) to
    # write, and a workflow dispatch ``repo`` in any case.
    needs = [("repo" if private else "public_repo", "issues, comments, reactions and commit statuses",
              {"repo"} if private else {"repo", "public_repo"})]
    if actions:
        needs.append(("repo", "training on GitHub Actions (MLOPS_GITHUB_WORKFLOW)", {"repo"}))
    checks = []
    for scope, why, accepted in needs:
        if granted & accepted:
            checks.append(PermissionCheck("GitHub", scope, f"classic token scope {scope}", why, "granted"))
        else:
            checks.append(PermissionCheck(
                "GitHub", scope, f"classic token scope {scope}", why, "missing",
                f"the token has {', '.join(sorted(granted)) or 'no scopes'}; give it the '{scope}' scope "
                "(github.com → Settings → Developer settings → Personal access tokens (classic))"))
    return checks


def _github_probe(client: GitHubRepositoryCalls, name: str, level: str, why: str, *, branch: str,
                  private: bool) -> PermissionCheck:
    permission = f"{name}={level}"
    label = _github_label(permission)
    if name == "metadata":  # the repository was just read: every fine-grained token holds it
        return PermissionCheck("GitHub", permission, label, why, "granted")
    path, query = _GITHUB_PROBES[name]
    try:
        client.call("GET", path.format(branch=branch), params=dict(query), budgeted=False)
    except PermissionRefused as refused:
        return PermissionCheck("GitHub", permission, label, why, "missing",
                               f"a read needing it was refused ({refused.permission}); {_GITHUB_SETTINGS}")
    except (PermanentError, TransientError) as exc:
        return PermissionCheck("GitHub", permission, label, why, "unchecked",
                               f"the read that would show it failed ({' '.join(str(exc).split())[:200]})")
    if not private:
        return PermissionCheck("GitHub", permission, label, why, "unchecked",
                               f"reads of a public repository need no permission, so only a write would show it; "
                               f"make sure the token or App has {label}")
    if level == "read":
        return PermissionCheck("GitHub", permission, label, why, "granted")
    return PermissionCheck("GitHub", permission, label, why, "unchecked",
                           f"it may read; whether it may write shows only on a write: make sure it has {label}")


# ---------------------------------------------------------------------------
# Azure DevOps


class AzureDevOpsCalls(Protocol):
    """What the Azure DevOps adapter's client offers this module: one SDK call, errors translated."""

    def call(self, kind: str, method: str, *args: Any, write: bool = False, **kwargs: Any) -> Any: ...


def azure_devops_permissions(client: AzureDevOpsCalls, *, project: str, work_item_type: str,
                             repository: str | None = None, pipeline_id: int | None = None
                             ) -> list[PermissionCheck]:
    """One check per PAT scope the configured Boards (always), Repos and Pipelines need."""
    from integrations.azure_devops import SCOPE_NAMES

    def probe(scope: str, why: str, kind: str, method: str, *args: Any, **kwargs: Any) -> PermissionCheck:
        try:
            client.call(kind, method, *args, **kwargs)
        except PermissionRefused as refused:
            return PermissionCheck("Azure DevOps", scope, SCOPE_NAMES[scope], why, "missing", str(refused))
        except (PermanentError, TransientError) as exc:  # a wrong project or pipeline: the other checks say
            return PermissionCheck("Azure DevOps", scope, SCOPE_NAMES[scope], why, "unchecked",
                                   f"the read that would show it failed ({' '.join(str(exc).split())[:200]})")
        return PermissionCheck("Azure DevOps", scope, SCOPE_NAMES[scope], why, "granted")

    def unchecked(scope: str, why: str) -> PermissionCheck:
        return PermissionCheck("Azure DevOps", scope, SCOPE_NAMES[scope], why, "unchecked",
                               f"only a write would show it, and the service offers no dry run for it: make sure "
                               f"the PAT has {SCOPE_NAMES[scope]}")

    from azure.devops.v7_1.work_item_tracking.models import JsonPatchOperation

    draft = [JsonPatchOperation(op="add", path="/fields/System.Title", value="mlops-bot doctor")]
    checks = [
        probe("vso.work", "reading tickets and linked work items", "wit", "get_work_item_types", project),
        probe("vso.work_write", "opening, updating, commenting on and closing tickets", "wit", "create_work_item",
              draft, project, work_item_type, validate_only=True),
    ]
    if repository:
        checks += [
            probe("vso.code", "reading completed pull requests and their comments", "git", "get_repository",
                  repository, project=project),
            unchecked("vso.code_write", "replies and reactions in pull request threads"),
            unchecked("vso.code_status", "commit statuses"),
        ]
    if pipeline_id is not None:
        checks += [
            probe("vso.build", "following pipeline runs", "pipelines", "get_pipeline", project, pipeline_id),
            unchecked("vso.build_execute", "starting pipeline runs"),
        ]
    return checks


# ---------------------------------------------------------------------------
# Slack

#: what each bot token scope is for
SLACK_SCOPE_USES = {
    "chat:write": "posting and updating messages",
    "channels:read": "finding channels by name",
    "channels:history": "finding its own messages again (so nothing is posted twice)",
    "files:write": "uploading charts",
    "reactions:write": "acknowledging commands with a reaction",
    "usergroups:read": "user groups in MLOPS_SLACK_PERMISSIONS",
    "commands": "slash commands",
}
_SLACK_GROUP_ID = re.compile(r"^S[A-Z0-9]{6,}$")
_SLACK_FIX = ("add it under OAuth & Permissions → Bot Token Scopes on api.slack.com/apps, then reinstall the app "
              "to the workspace and set the new SLACK_BOT_TOKEN")


class SlackCalls(Protocol):
    """What slack-sdk's WebClient offers this module."""

    def auth_test(self, **kwargs: Any) -> Any: ...


def slack_needs(*, permission_keys: Sequence[str] = (), slash_commands: bool = False) -> list[str]:
    """The bot token scopes the bot's Slack features need: ``usergroups:read`` when
    MLOPS_SLACK_PERMISSIONS names a user group (``@handle`` or ``S…`` id), ``commands`` when slash
    commands are served."""
    needs = ["chat:write", "channels:read", "channels:history", "files:write", "reactions:write"]
    if any(key.startswith("@") or _SLACK_GROUP_ID.match(key) for key in permission_keys):
        needs.append("usergroups:read")
    if slash_commands:
        needs.append("commands")
    return needs


def slack_permissions(client: SlackCalls, needs: Sequence[str]) -> list[PermissionCheck]:
    """One check per scope in ``needs``, against the ``x-oauth-scopes`` of ``auth.test``'s answer.
    A user token (no header) or a refused token gives no lines: the token check says why."""
    from slack_sdk.errors import SlackApiError

    try:
        answer = client.auth_test()
    except SlackApiError:
        return []
    headers = {str(k).lower(): v for k, v in (getattr(answer, "headers", None) or {}).items()}
    if "x-oauth-scopes" not in headers:
        return []
    raw = headers["x-oauth-scopes"]
    raw = raw[0] if isinstance(raw, list) else raw
    granted = {scope.strip() for scope in str(raw).split(",") if scope.strip()}
    return [PermissionCheck("Slack", scope, scope, SLACK_SCOPE_USES.get(scope, "the bot"),
                            "granted" if scope in granted else "missing",
                            "" if scope in granted else _SLACK_FIX) for scope in needs]
