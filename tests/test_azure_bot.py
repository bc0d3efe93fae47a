"""The bot with its tickets on Azure Boards (the real azure-devops client against the emulator),
and the Azure DevOps service-hook route."""

from __future__ import annotations

import base64
import json
import os
import sys
import tempfile

if "azure.devops" not in sys.modules:  # read by azure-devops at import: keep its cache out of ~
    os.environ["AZURE_DEVOPS_CACHE_DIR"] = tempfile.mkdtemp(prefix="ado-cache-")

import pytest
from starlette.testclient import TestClient

from bot.webhooks import create_app
from integrations.ports import Target
from tests.conftest import REPO, settle, tiny_frame
from tests.emulators.fixtures import azure_devops_emulator  # noqa: F401

SECRET = "hook-password"
HOOKS = REPO.parent / "shared" / "refdata" / "azure-devops" / "service-hooks"


@pytest.fixture
def bot(azure_devops_emulator, make_app):  # noqa: F811
    azure_devops_emulator.state.add_project("proj")
    return make_app(azure_devops_org_url=azure_devops_emulator.base_url, azure_devops_pat=azure_devops_emulator.pat,
                    azure_devops_project="proj", azure_area_path="proj\\ML", azure_devops_webhook_secret=SECRET)



def test_drift_opens_one_work_item_in_the_current_iteration_and_retrain_closes_it(azure_devops_emulator, bot):  # noqa: F811
    state = azure_devops_emulator.state
    settle(bot)
    bot.settings.batches_dir.mkdir(parents=True, exist_ok=True)
    for name, seed in (("b1.csv", 1), ("b2.csv", 2)):
        frame = tiny_frame(300, seed=seed, x1_shift=1.5)
        if name != "b1.csv":  # the first batch is labelled: a retrain has something to learn
            frame = frame.drop(columns=["label"])
        frame.to_csv(bot.settings.batches_dir / name, index=False)
        settle(bot)
    ticket = bot.tracker.find_open("retrain:tiny")
    assert ticket is not None
    fields = state.work_item(ticket.id).fields
    assert fields["System.IterationPath"] == "proj\\Sprint 1" and fields["System.AreaPath"] == "proj\\ML"
    assert "retrain" in fields["System.Tags"] and fields["Microsoft.VSTS.Common.Priority"] in {1, 2, 3}
    assert len([n for n in range(1, ticket.id + 5) if state.has_work_item(n)]) == 1  # one work item per episode

    bot.scm.add_comment(Target("ticket", bot.scm.repo, ticket.id), "/retrain")
    settle(bot)
    assert state.work_item(ticket.id).fields["System.State"] == "Closed"
    assert bot.tracker.find_open("retrain:tiny") is None


def _auth(password: str) -> dict:
    return {"Authorization": "Basic " + base64.b64encode(f"anyone:{password}".encode()).decode()}


def test_service_hooks_need_the_password(bot):
    client = TestClient(create_app(bot))
    assert client.post("/webhooks/azure-devops", content=b"{}").status_code == 401
    assert client.post("/webhooks/azure-devops", content=b"{}", headers=_auth("wrong")).status_code == 401
    bad = client.post("/webhooks/azure-devops", content=b"not json", headers=_auth(SECRET))
    assert bad.status_code == 400 and "not JSON" in bad.json()["error"]
    unknown = client.post("/webhooks/azure-devops", content=b'{"hello": 1}', headers=_auth(SECRET))
    assert unknown.status_code == 400


@pytest.mark.skipif(not HOOKS.is_dir(), reason="../shared/refdata not found: the service-hook examples live there")
@pytest.mark.parametrize("name", sorted(p.name for p in HOOKS.glob("*.json")) if HOOKS.is_dir() else [])
def test_every_service_hook_example_is_accepted_or_cleanly_ignored(bot, name):
    client = TestClient(create_app(bot))
    body = (HOOKS / name).read_bytes()
    first = client.post("/webhooks/azure-devops", content=body, headers=_auth(SECRET))
    assert first.status_code == 202, first.text
    assert first.json()["status"] in {"accepted", "ignored"}
    again = client.post("/webhooks/azure-devops", content=body, headers=_auth(SECRET))
    assert again.json()["status"] in {"duplicate", "ignored"} if json.loads(body).get("id") else True


def test_fixes_ab_resolves_the_work_item_when_the_changes_model_is_promoted(azure_devops_emulator, bot, repo):  # noqa: F811
    from tests.conftest import PROJECT
    from tests.test_bot import commit

    state = azure_devops_emulator.state
    settle(bot)
    fixed = state.add_work_item("proj", "Improve recall")
    mentioned = state.add_work_item("proj", "Related work")
    commit(repo, f"{PROJECT}/notes.md", "tuned\n", f"Tune the model\n\nFixes AB#{fixed}, see AB#{mentioned}")
    settle(bot)
    assert bot.registry.production("tiny").version == 2
    assert state.work_item(fixed).fields["System.State"] == "Closed"
    assert state.work_item(mentioned).fields["System.State"] != "Closed"
    assert any("Linked change" in c for c in _comments(state, mentioned))


def _comments(state, number: int) -> list[str]:
    item = state.work_item(number)
    return [getattr(c, "text", "") for c in getattr(item, "comments", [])]


def test_a_bot_of_several_projects_keeps_one_work_item_per_project(azure_devops_emulator, tmp_path, monkeypatch):  # noqa: F811
    """Three model projects in one repository, tickets on Azure Boards: drift in two opens one work
    item each, tagged with its model; /retrain on one work item retrains and closes only its own."""
    import io

    from bot.app import build
    from bot.settings import Settings
    from tests.conftest import FakeClock, run_pipelines_in_process, seed_embedded_mlflow
    from tests.test_monorepo import _monorepo

    state = azure_devops_emulator.state
    state.add_project("proj")
    repo = _monorepo(tmp_path / "repo")
    monkeypatch.chdir(repo)
    seed_embedded_mlflow(tmp_path / "state")
    bot = build(Settings(data_dir=tmp_path / "state", drift_cooldown_s=0,
                         azure_devops_org_url=azure_devops_emulator.base_url,
                         azure_devops_pat=azure_devops_emulator.pat, azure_devops_project="proj",
                         azure_area_path="proj\\ML"), clock=FakeClock(), out=io.StringIO())
    run_pipelines_in_process(bot)
    try:
        settle(bot)
        for name, seed in (("churn", 1), ("fraud", 2)):  # labelled: a retrain has something to learn
            batches = bot.router.named(name).settings.batches_dir
            batches.mkdir(parents=True)
            tiny_frame(300, seed=seed, x1_shift=1.5).to_csv(batches / "b1.csv", index=False)
        settle(bot)
        tickets = {name: bot.tracker.find_open(f"retrain:{name}") for name in ("churn", "fraud", "demand")}
        assert tickets["demand"] is None and tickets["churn"].id != tickets["fraud"].id
        for name in ("churn", "fraud"):
            assert f"model:{name}" in state.work_item(tickets[name].id).fields["System.Tags"]

        bot.scm.add_comment(Target("ticket", bot.scm.repo, tickets["churn"].id), "/retrain")
        settle(bot)
        assert state.work_item(tickets["churn"].id).fields["System.State"] == "Closed"
        assert state.work_item(tickets["fraud"].id).fields["System.State"] != "Closed"
        assert bot.registry.production("churn").version == 2 and bot.registry.production("fraud").version == 1
    finally:
        bot.store.close()
