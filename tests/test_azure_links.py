"""The whole bot with Azure DevOps (the real azure-devops client against the emulator): AB# links from
GitHub pull requests and from Azure Repos, path filters and likes on Azure Repos, and `mlops-bot doctor`."""

from __future__ import annotations

import os
import sys
import tempfile

if "azure.devops" not in sys.modules:  # read by azure-devops at import: keep its cache out of ~
    os.environ["AZURE_DEVOPS_CACHE_DIR"] = tempfile.mkdtemp(prefix="ado-cache-")

import pytest

from tests.conftest import settle
from tests.emulators.fixtures import azure_devops_emulator, github_emulator  # noqa: F401

REPO = "acme/model"
FILES = ["models/tiny/mlops.toml"]


@pytest.fixture
def ado(azure_devops_emulator):  # noqa: F811
    state = azure_devops_emulator.state
    state.add_project("proj")
    state.add_repo("proj", "model")
    return azure_devops_emulator


@pytest.fixture
def github(github_emulator):  # noqa: F811
    github_emulator.state.add_repo(REPO)
    for login, role in [("bob", "write"), ("mlops-bot[bot]", "write")]:
        github_emulator.state.add_collaborator(REPO, login, role)
    return github_emulator


def _github_with_azure_boards(make_app, github, ado):
    """A bot with its code on GitHub and its tickets on Azure Boards."""
    return make_app(github_repository=REPO, github_token=github.token, github_api_url=github.base_url,
                    github_timeout_s=10, project_paths=["models/tiny"], azure_devops_org_url=ado.base_url,
                    azure_devops_pat=ado.pat, azure_devops_project="proj")


def _relations(ado, number: int) -> list[tuple[str, str]]:
    return [(r["rel"], r["url"]) for r in ado.state.work_item(number).relations]


def _link_comments(ado, number: int) -> list[str]:
    return [c.text for c in ado.state.work_item(number).comments if "[mlops-bot:ab-link:" in c.text]


# --- AB# from GitHub --------------------------------------------------------------------------


def test_ab_links_from_a_github_pull_request_land_once_under_write_faults(ado, github, make_app):
    app = _github_with_azure_boards(make_app, github, ado)
    app.run_once()  # the first look; the first model
    body_item = ado.state.add_work_item("proj", "Improve recall")
    comment_item = ado.state.add_work_item("proj", "Check calibration")
    number = github.state.open_pull(REPO, "Tune the model", f"Tuning. Fixes AB#{body_item}", "bob", files=FILES)
    github.state.add_comment(REPO, number, "bob", f"This also helps AB#{comment_item} and AB#{body_item}")
    github.state.clock.advance(seconds=2)
    github.state.merge_pull(REPO, number)
    ado.faults.random(0.5, ["503", "lost_response", "429", "500"], seed=4, target=r"(POST|PATCH) (?!.*/wiql).*",
                      retry_after=0)
    settle(app, rounds=60)
    ado.faults.clear()
    assert ado.faults.fired, "no fault was injected"
    url = _relations(ado, body_item)[0][1]
    assert url.startswith("http") and url.endswith(f"/{REPO}/pull/{number}")  # the pull request's html_url
    assert _relations(ado, body_item) == [("Hyperlink", url)]
    assert _relations(ado, comment_item) == [("Hyperlink", url)]
    assert len(_link_comments(ado, body_item)) == 1 and "in its description" in _link_comments(ado, body_item)[0]
    assert len(_link_comments(ado, comment_item)) == 1 and "in its comments" in _link_comments(ado, comment_item)[0]
    assert app.store.effects(status="dead") == []
    links = {(l.src_kind, l.src_id, l.relation) for l in app.store.trace("ticket", str(comment_item))}
    assert ("ticket", str(comment_item), "linked_to") in links


def test_ab_link_from_a_github_commit_message_only_after_commits_could_be_read(ado, github, make_app):
    app = _github_with_azure_boards(make_app, github, ado)
    app.run_once()  # the first look; the first model
    item = ado.state.add_work_item("proj", "Calibrate the scores")
    number = github.state.open_pull(REPO, "Tune the model", "Tuning.", "bob", files=FILES,
                                    commits=["Tune the forest", f"Calibrate\n\nPart of AB#{item}", "Lint"])
    github.state.clock.advance(seconds=2)
    github.state.merge_pull(REPO, number)
    # GitHub fails while the commits are read: the merge waits, rather than being handled without them.
    github.faults.add("pulls/list-commits", 502, times=None)
    app.run_once()
    github.faults.clear()
    assert github.faults.fired and ado.state.work_item(item).relations == []
    settle(app)
    settle(app)  # a later cycle repeats nothing
    url = github.base_url.split("/api/")[0] + f"/{REPO}/pull/{number}"
    assert _relations(ado, item) == [("Hyperlink", url)]
    assert len(_link_comments(ado, item)) == 1 and "in its commits" in _link_comments(ado, item)[0]
    assert app.store.effects(status="dead") == []


def test_fixes_ab_on_a_github_pull_request_resolves_the_work_item_when_its_model_is_promoted(
        ado, github, make_app, repo, tmp_path):
    from tests.test_github_bot import Remote

    remote = Remote(repo, tmp_path)
    github.state.repo(REPO).clone_url = remote.bare.as_uri()
    app = _github_with_azure_boards(make_app, github, ado)
    app.run_once()  # the first look; the first model
    fixed = ado.state.add_work_item("proj", "Improve recall")
    mentioned = ado.state.add_work_item("proj", "Check calibration")
    number = github.state.open_pull(REPO, "Tune the model", f"Fixes AB#{fixed}; see AB#{mentioned}", "bob",
                                    files=FILES)
    github.state.clock.advance(seconds=2)
    github.state.merge_pull(REPO, number, merge_sha=remote.commit("Tune the model"))
    settle(app, rounds=60)
    assert app.registry.production("tiny").version == 2  # the merge commit's code trained and was promoted
    assert ado.state.work_item(fixed).fields["System.State"] == "Closed"
    assert ado.state.work_item(mentioned).fields["System.State"] != "Closed"  # only named, not fixed
    assert len(_relations(ado, fixed)) == len(_relations(ado, mentioned)) == 1
    assert app.store.effects(status="dead") == []


# --- Azure Repos ------------------------------------------------------------------------------


@pytest.fixture
def repos_bot(ado, make_app):
    app = make_app(azure_devops_org_url=ado.base_url, azure_devops_pat=ado.pat, azure_devops_project="proj",
                   azure_repository="model", project_paths=["models/tiny"],
                   azure_permissions={"alice@example.com": "write"})
    app.run_once()  # the first look: merges and comments from now on are news
    return app


def test_azure_repos_path_filter_ab_links_and_likes(ado, repos_bot):
    app, state = repos_bot, ado.state
    item = state.add_work_item("proj", "Improve recall")
    ado.clock.advance(5)
    docs = state.open_pull("model", "Docs only", f"AB#{item}", files=["docs/index.md"])
    state.complete_pull("model", docs)
    ado.clock.advance(5)
    tuned = state.open_pull("model", "Tune", f"Fixes AB#{item}", files={"models/tiny/mlops.toml": "edit",
                                                                       "docs/tuning.md": "add"})
    merge = state.complete_pull("model", tuned)
    settle(app)
    assert [r.trigger for r in app.registry.runs("tiny")] == ["merge", "bootstrap"]  # the docs change ran nothing
    statuses = state.repo("model").commit_statuses
    assert merge in statuses and len(statuses) == 1
    project_id, repo_id = state.project("proj").id, state.repo("model").id
    assert sorted(_relations(ado, item)) == sorted(
        ("ArtifactLink", f"vstfs:///Git/PullRequestId/{project_id}%2F{repo_id}%2F{n}") for n in (docs, tuned))
    assert state.work_item(item).fields["System.State"] == "Closed"

    # a command in a pull request thread: liked, answered in its thread
    active = state.open_pull("model", "Next", "", files=FILES)
    ado.clock.advance(5)
    thread, comment = state.add_thread_comment("model", active, "/status", author="alice@example.com")
    settle(app)
    comments = state.repo("model").pulls[active].threads[thread].comments
    assert comments[comment - 1].likes == ["mlops-bot@example.com"]
    assert len(comments) == 2 and "[mlops-bot:" not in comments[1].content and "<!-- mlops-bot:" in comments[1].content
    settle(app)
    assert ado.log.count("POST", path=r".*/likes") == 1


# --- mlops-bot doctor -------------------------------------------------------------------------


def test_doctor_checks_azure_devops(ado, repo, tmp_path, monkeypatch):
    from click.testing import CliRunner

    from bot.cli import cli
    from tests.conftest import PROJECT

    ado.state.add_pipeline("proj", "train")
    monkeypatch.chdir(tmp_path)
    for name, value in {"MLOPS_PROJECT_DIR": str(repo / PROJECT), "MLOPS_DATA_DIR": str(tmp_path / "state"),
                        "AZURE_DEVOPS_ORG_URL": ado.base_url, "AZURE_DEVOPS_EXT_PAT": ado.pat,
                        "AZURE_DEVOPS_PROJECT": "proj", "MLOPS_AZURE_REPOSITORY": "model",
                        "MLOPS_AZURE_PIPELINE_ID": "1"}.items():
        monkeypatch.setenv(name, value)
    healthy = CliRunner().invoke(cli, ["doctor"])
    assert healthy.exit_code == 0, healthy.output
    assert "✓ Azure DevOps token (authenticates as mlops-bot)" in healthy.output
    assert "✓ repository model" in healthy.output and "✓ pipeline train (1)" in healthy.output
    assert "✓ Azure Boards states of Task (MLOPS_AZURE_WORK_ITEM_TYPE): New → Active → Closed" in healthy.output
    assert ado.pat not in healthy.output
    ado.add_pat("boards-only", "reader@example.com", scopes=["vso.work_write"])
    monkeypatch.setenv("AZURE_DEVOPS_EXT_PAT", "boards-only")
    monkeypatch.setenv("MLOPS_AZURE_TEAM", "Nobody")
    broken = CliRunner().invoke(cli, ["doctor"])
    assert broken.exit_code == 1
    assert "✗ team Nobody" in broken.output and "fix: set MLOPS_AZURE_TEAM" in broken.output
    assert "✗ repository model" in broken.output and "Code: Read & status" in broken.output
    assert "✗ pipeline 1" in broken.output and "Build: Read & execute" in broken.output
    assert "boards-only" not in broken.output
