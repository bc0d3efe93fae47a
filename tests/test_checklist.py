"""The live checklist in a retrain ticket (bot/checklist.py): rendering and reading a body people edit
too, and ticks acting once with the ticker's permission on GitHub, the local board and Azure Boards."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from bot import checklist
from bot.events import ChecklistTicked, event_from_dict
from integrations.github_payloads import parse_delivery
from tests.conftest import CANDIDATE_STAGE, PROJECT, settle, tiny_frame

BOXES = checklist.boxes(candidate=(3, "validated: accuracy 0.91 vs 0.87"), previous=2)
REFDATA = Path(__file__).resolve().parents[2] / "shared" / "refdata"
EDITED_EXAMPLE = REFDATA / "github" / "webhooks" / "examples" / "api.github.com" / "issues" / "edited.payload.json"


def body_with(section: str, *, before: str = "", after: str = "<!-- mlops-bot:retrain:tiny -->") -> str:
    return "\n\n".join(part for part in (before, section, after) if part)


def tick(body: str, label: str) -> str:
    assert f"[ ] {label}" in body, body
    return body.replace(f"[ ] {label}", f"[x] {label}", 1)


# --- render and read ------------------------------------------------------------------------------


def test_the_section_offers_retrain_and_only_the_deploy_and_rollback_that_apply():
    assert [b.label for b in BOXES] == ["Retrain now", "Deploy v3 (validated: accuracy 0.91 vs 0.87)",
                                        "Roll back to v2"]
    assert [b.action for b in checklist.boxes()] == ["retrain"]
    assert [b.action for b in checklist.boxes(previous=4)] == ["retrain", "rollback-v4"]
    section = checklist.render("The report.", "waiting", BOXES, 7)
    assert "- [ ] Deploy v3 (validated: accuracy 0.91 vs 0.87) <!-- mlops-bot action=deploy-v3 -->" in section
    assert "**Status:** waiting" in section and "The report." in section
    # No marker of the section reads as a ticket key (``<!-- mlops-bot:key -->``).
    assert "<!-- mlops-bot:" not in section


@pytest.mark.parametrize("action, command", [("retrain", "/retrain"), ("deploy-v3", "/deploy 3"),
                                             ("rollback-v2", "/rollback"), ("deploy", None), ("retrain-v1", None),
                                             ("merge", None)])
def test_each_box_stands_for_a_typed_command(action, command):
    assert checklist.command_for(action) == command


def test_a_tick_is_read_with_the_revision_it_was_ticked_in_and_each_box_once():
    body = body_with(checklist.render("Report", "waiting", BOXES, 4), before="Notes from maya.")
    assert checklist.read(body) == checklist.Reading(True, 4, ())
    ticked = tick(tick(body, "Deploy v3"), "Retrain now")
    assert checklist.read(ticked).ticked == ("retrain", "deploy-v3")
    # The same box ticked twice (two people's edits merged, a copied line) is one tick.
    twice = ticked.replace("- [x] Retrain now <!-- mlops-bot action=retrain -->",
                           "- [x] Retrain now <!-- mlops-bot action=retrain -->\n"
                           "- [X] Retrain now <!-- mlops-bot action=retrain -->")
    assert checklist.read(twice).ticked == ("retrain", "deploy-v3")


def test_a_box_a_person_wrote_outside_the_section_is_not_the_bots():
    body = body_with(checklist.render("Report", "waiting", BOXES, 1), before="- [x] Call the data team")
    assert checklist.read(body).ticked == ()


def test_a_box_is_ticked_at_the_console_by_its_id_or_the_start_of_its_label():
    body = body_with(checklist.render("Report", "waiting", BOXES, 2))
    assert checklist.read(checklist.tick(body, "deploy-v3")).ticked == ("deploy-v3",)
    assert checklist.read(checklist.tick(body, "roll back")).ticked == ("rollback-v2",)
    with pytest.raises(ValueError, match=r"no box 'Deploy v9'.*“Retrain now” \(retrain\)"):
        checklist.tick(body, "Deploy v9")


def test_rewriting_the_section_keeps_the_persons_text_above_and_below_it():
    body = body_with(checklist.render("Old report", "waiting", BOXES, 1), before="Above, by a person.",
                     after="Below, by a person.\n\n<!-- mlops-bot:retrain:tiny -->")
    new = checklist.splice(tick(body, "Roll back to v2"), checklist.render("New report", "done", BOXES[:1], 2))
    assert new.startswith("Above, by a person.\n\n<!-- mlops-bot checklist, revision 2")
    assert new.endswith("Below, by a person.\n\n<!-- mlops-bot:retrain:tiny -->")
    assert "Old report" not in new and "[x]" not in new and checklist.read(new) == checklist.Reading(True, 2, ())


@pytest.mark.parametrize("damage, problem", [
    (lambda b: b.replace("<!-- mlops-bot checklist end -->", ""), "1 checklist start and 0 end"),
    (lambda b: b.replace("<!-- mlops-bot checklist, revision 3", "<!-- mlops-bot checklist, revision 3", 1)
     .replace("Report", "<!-- mlops-bot checklist end -->\nReport"), "1 checklist start and 2 end"),
    (lambda b: b.replace("<!-- mlops-bot checklist end -->", "") .replace(
        "<!-- mlops-bot checklist, revision", "<!-- mlops-bot checklist end -->\n<!-- mlops-bot checklist, revision"),
     "end marker comes before its start"),
])
def test_a_section_edited_out_of_shape_is_not_obeyed_and_is_rebuilt_keeping_every_persons_word(damage, problem):
    body = body_with(tick(checklist.render("Report", "waiting", BOXES, 3), "Deploy v3"), before="Keep me, please.")
    broken = damage(body)
    reading = checklist.read(broken)
    assert not reading.intact and reading.ticked == () and problem in reading.problem
    rebuilt = checklist.splice(broken, checklist.render("Report", "rebuilt", BOXES, 4))
    assert checklist.read(rebuilt) == checklist.Reading(True, 4, ())
    assert "Keep me, please." in rebuilt and "<!-- mlops-bot:retrain:tiny -->" in rebuilt
    assert rebuilt.count("action=deploy-v3") == 1  # the bot's stray box lines go; the rebuilt section has one


def test_a_body_without_a_section_gets_one_at_the_top():
    new = checklist.splice("Written by hand.\n\n<!-- mlops-bot:retrain:tiny -->", checklist.render("R", "s", BOXES, 1))
    assert new.startswith("<!-- mlops-bot checklist, revision 1") and new.endswith(
        "Written by hand.\n\n<!-- mlops-bot:retrain:tiny -->")


def test_visible_markers_survive_azures_sanitiser_and_read_back_from_its_html():
    from integrations.azure_devops import markdown_to_html
    from tests.emulators.azure_devops import sanitize_html

    section = checklist.render("Report", "waiting", BOXES, 5, visible=True)
    stored = sanitize_html(markdown_to_html("A person's note.") + "\n" + markdown_to_html(section)
                           + '\n<p style="font-size:smaller">[mlops-bot:retrain:tiny]</p>')
    assert "mlops-bot checklist, revision 5" in stored and "· action deploy-v3" in stored
    assert checklist.read(stored, visible=True) == checklist.Reading(True, 5, ())
    edited = sanitize_html(stored.replace("[ ] Roll back to v2", "[x] Roll back to v2"))
    assert checklist.read(edited, visible=True).ticked == ("rollback-v2",)
    new = checklist.splice(edited, markdown_to_html(checklist.render("Report", "s", BOXES[:1], 6, visible=True)),
                           visible=True)
    assert new.startswith("<p>A person's note.</p>")
    assert checklist.read(new, visible=True) == checklist.Reading(True, 6, ())
    assert "[mlops-bot:retrain:tiny]" in new and "Roll back" not in new


def test_a_tick_event_is_the_same_whoever_reports_it_and_survives_storage():
    by_webhook = ChecklistTicked("github", "github", 7, "deploy-v3", 4, "maya")
    by_poll = ChecklistTicked("board", "github", 7, "deploy-v3", 4, "")
    by_another = ChecklistTicked("github", "github", 7, "deploy-v3", 4, "alice")
    assert by_webhook.key == by_poll.key == by_another.key
    assert ChecklistTicked("github", "github", 7, "deploy-v3", 5, "maya").key != by_webhook.key
    assert event_from_dict(by_webhook.to_dict()) == by_webhook


def test_an_issues_edited_delivery_names_the_editor_and_the_new_body():
    payload = json.loads(EDITED_EXAMPLE.read_text()) if EDITED_EXAMPLE.is_file() else _minimal_edited()
    payload = copy.deepcopy(payload)
    payload["changes"] = {"body": {"from": "before"}}
    payload["issue"]["body"] = "after"
    payload["sender"]["login"] = "maya"
    fact = parse_delivery("issues", payload)
    assert (fact.kind, fact.ticket, fact.by, fact.body) == ("ticket_edited", payload["issue"]["number"], "maya", "after")
    payload["changes"] = {"title": {"from": "Old title"}}  # a title edit ticks nothing
    assert parse_delivery("issues", payload).kind == "ignored"


def _minimal_edited() -> dict:
    return {"action": "edited", "issue": {"number": 1, "body": ""}, "changes": {},
            "repository": {"full_name": "o/r"}, "sender": {"login": "x"}}


# --- end to end on the GitHub emulator ---------------------------------------------------------------

REPO = "acme/model"


@pytest.fixture
def episode(github_emulator, make_app, repo):
    return open_episode(github_emulator, make_app, repo, github_webhook_secret="secret")


def open_episode(gh, make_app, repo, **settings):
    """The bot on GitHub with v1 in production, a drift ticket open, and v2 retrained for it and
    kept as a validated candidate: its checklist offers "Deploy v2"."""
    gh.state.add_repo(REPO)
    for login, role in [("alice", "admin"), ("maya", "maintain"), ("bob", "write"), ("rita", "read"),
                        ("mlops-bot[bot]", "write")]:
        gh.state.add_collaborator(REPO, login, role)
    app = make_app(github_repository=REPO, github_token=gh.token, github_api_url=gh.base_url,
                   project_paths=[PROJECT], github_timeout_s=10, **settings)
    app.run_once()
    app.settings.batches_dir.mkdir(parents=True, exist_ok=True)
    tiny_frame(300, seed=1, x1_shift=1.5).to_csv(app.settings.batches_dir / "b1.csv", index=False)
    settle(app, rounds=60)
    [number] = [i.number for i in gh.state.issues(REPO) if "mlops-bot" in i.labels]
    toml = repo / PROJECT / "mlops.toml"
    toml.write_text(toml.read_text() + CANDIDATE_STAGE)
    gh.state.add_comment(REPO, number, "bob", "/retrain")
    settle(app, rounds=60)
    app.gh, app.ticket = gh, number
    return app


def edit_as(app, who: str, body: str) -> dict:
    """``who`` saves the issue's body in the web page; returns the ``issues`` edited delivery GitHub
    sends, built on the published example."""
    before = app.gh.state.edit_issue_body(REPO, app.ticket, body, by=who)
    payload = copy.deepcopy(json.loads(EDITED_EXAMPLE.read_text())) if EDITED_EXAMPLE.is_file() else _minimal_edited()
    payload["issue"].update({"number": app.ticket, "body": body})
    payload["changes"] = {"body": {"from": before}}
    payload["repository"]["full_name"] = REPO
    payload["sender"]["login"] = who
    return payload


def deliver(app, payload: dict) -> int:
    """POST the ``issues`` delivery to the bot's webhook route, signed, under a new delivery id each
    time (so the checklist's own once-only rule is what is tested); 1 when it made a new event."""
    import hashlib
    import hmac
    import uuid

    from starlette.testclient import TestClient

    from bot.webhooks import create_app

    assert parse_delivery("issues", payload, bot_login=app.settings.bot_name).kind == "ticket_edited"
    body = json.dumps(payload).encode()
    secret = app.settings.github_webhook_secret.get_secret_value().encode()
    answer = TestClient(create_app(app)).post("/webhooks/github", content=body, headers={
        "X-GitHub-Event": "issues", "X-GitHub-Delivery": str(uuid.uuid4()), "Content-Type": "application/json",
        "X-Hub-Signature-256": "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()})
    assert answer.status_code == 202, answer.text
    return int(answer.json()["status"] == "accepted")


def issue_body(app) -> str:
    return app.gh.state.issue(REPO, app.ticket).body or ""


def bot_comments(app) -> list[str]:
    return [c.body for c in app.gh.state.comments(REPO, app.ticket) if c.user == "mlops-bot[bot]"]


def test_ticking_deploy_deploys_the_candidate_once_however_often_it_is_reported(episode):
    assert episode.registry.production("tiny").version == 1
    body = issue_body(episode)
    assert "- [ ] Deploy v2 (validated: roc_auc" in body and "- [ ] Retrain now" in body
    revision = checklist.read(body).revision
    payload = edit_as(episode, "maya", "Maya: let's ship it.\n\n" + tick(body, "Deploy v2"))
    assert deliver(episode, payload) == 1
    assert deliver(episode, payload) == 0  # delivered again
    assert episode.lifecycle.poll_checklist() == 0  # and the poll sees the ticked body too
    settle(episode, rounds=60)
    assert episode.registry.production("tiny").version == 2
    promotions = [e for e in episode.store.effects() if e.kind == "registry.promote"]
    assert len(promotions) == 1 and promotions[0].status == "done"
    after = issue_body(episode)
    reading = checklist.read(after)
    assert reading.intact and reading.ticked == () and reading.revision > revision
    assert after.startswith("Maya: let's ship it.")  # the person's text kept
    # the episode's candidate deployed: measured as after an automatic promote, resolved, closed, no box left
    assert "- [ ]" not in after and "✅ resolved: tiny v2 is in production" in after
    assert episode.gh.state.issue(REPO, episode.ticket).state == "closed"
    assert any("@maya ticked “Deploy v2" in c for c in bot_comments(episode))
    # A later delivery of the same tick (GitHub retries) deploys nothing more.
    assert deliver(episode, payload) == 0
    settle(episode, rounds=60)
    assert len([e for e in episode.store.effects() if e.kind == "registry.promote"]) == 1


def test_two_people_ticking_the_same_box_at_once_deploy_once(episode):
    body = issue_body(episode)
    first = edit_as(episode, "maya", tick(body, "Deploy v2"))
    second = edit_as(episode, "alice", tick(body, "Deploy v2"))
    assert deliver(episode, first) + deliver(episode, second) == 1
    settle(episode, rounds=60)
    assert len([e for e in episode.store.effects() if e.kind == "registry.promote"]) == 1
    assert episode.registry.production("tiny").version == 2


def test_a_readers_tick_is_unticked_with_a_reply_naming_who_may(episode):
    body = issue_body(episode)
    assert deliver(episode, edit_as(episode, "rita", tick(body, "Deploy v2"))) == 1
    settle(episode, rounds=60)
    assert episode.registry.production("tiny").version == 1
    [refusal] = [c for c in bot_comments(episode) if "Deploy v2" in c and "@rita" in c]
    assert "needs **maintain** permission or higher (you have **read**)" in refusal
    after = issue_body(episode)
    assert checklist.read(after).ticked == () and "- [ ] Deploy v2" in after
    assert "ticked by @rita: not done" in after


def test_a_section_edited_out_of_shape_is_rebuilt_and_the_persons_text_kept(episode):
    body = issue_body(episode)
    broken = "Bob was here.\n\n" + tick(body, "Retrain now").replace("<!-- mlops-bot checklist end -->", "")
    assert deliver(episode, edit_as(episode, "bob", broken)) == 1
    settle(episode, rounds=60)
    assert len(episode.registry.runs("tiny")) == 2  # the tick in the broken section was not obeyed
    after = issue_body(episode)
    reading = checklist.read(after)
    assert reading.intact and reading.ticked == () and "Bob was here." in after
    assert "the checklist was rebuilt" in after


def test_without_the_webhook_a_github_tick_seen_by_the_poll_is_unticked_and_explained(github_emulator, make_app,
                                                                                      repo):
    episode = open_episode(github_emulator, make_app, repo)
    episode.gh.state.edit_issue_body(REPO, episode.ticket, tick(issue_body(episode), "Retrain now"), by="bob")
    assert episode.lifecycle.poll_checklist() == 1
    settle(episode, rounds=60)
    assert len(episode.registry.runs("tiny")) == 2  # nothing retrained
    assert any("does not tell me who edited" in c and "`/retrain`" in c for c in bot_comments(episode))
    assert checklist.read(issue_body(episode)).ticked == ()


# --- the local board (embedded defaults) ------------------------------------------------------------


def drift_batch(app, name: str = "b1.csv", seed: int = 1) -> None:
    app.settings.batches_dir.mkdir(parents=True, exist_ok=True)
    tiny_frame(300, seed=seed, x1_shift=1.5).to_csv(app.settings.batches_dir / name, index=False)
    settle(app, rounds=60)


def test_on_the_local_board_a_tick_acts_with_the_editors_permission_once(make_app):
    app = make_app()
    app.run_once()
    drift_batch(app)
    [ticket] = app.tracker.tickets(state="open")
    body = app.tracker.body(ticket.id).text
    assert checklist.read(body).revision == 1 and "- [ ] Retrain now" in body
    assert "mlops-bot checklist" not in app.tracker.details(ticket.id)["body"]  # `board show` hides the markers

    app.tracker.edit_body(ticket.id, tick(body, "Retrain now"), editor="guest")  # only reads, on this machine
    assert app.lifecycle.poll_checklist() == 1
    settle(app, rounds=60)
    assert len(app.registry.runs("tiny")) == 1
    comments = [c["body"] for c in app.tracker.details(ticket.id)["comments"]]
    assert any("@guest, `/retrain` needs **write** permission or higher" in c for c in comments)
    body = app.tracker.body(ticket.id).text
    assert checklist.read(body).ticked == () and "ticked by @guest: not done" in body

    app.tracker.edit_body(ticket.id, "A note of mine.\n\n" + tick(body, "Retrain now"), editor="you")
    assert app.lifecycle.poll_checklist() == 1
    assert app.lifecycle.poll_checklist() == 0  # the same tick, read again before the bot unticks it
    settle(app, rounds=60)
    runs = app.registry.runs("tiny")
    assert len(runs) == 2 and runs[0].trigger == "command"  # after the first model's run
    # The retrain on the labelled batch resolved the episode: the last revision offers no box.
    assert app.tracker.get(ticket.id).state == "closed"
    final = app.tracker.body(ticket.id).text
    assert final.startswith("A note of mine.") and "✅ resolved" in final and "- [ ]" not in final


# --- Azure Boards: HTML comments stripped, visible markers kept ----------------------------------------


def test_on_azure_boards_the_markers_survive_the_sanitiser_and_a_tick_acts(azure_devops_emulator, make_app):
    state = azure_devops_emulator.state
    state.add_project("proj")
    app = make_app(azure_devops_org_url=azure_devops_emulator.base_url, azure_devops_pat=azure_devops_emulator.pat,
                   azure_devops_project="proj", azure_area_path="proj\\ML")
    settle(app)
    drift_batch(app)
    ticket = app.tracker.find_open("retrain:tiny")
    description = state.work_item(ticket.id).fields["System.Description"]
    assert "<!--" not in description  # the service's sanitiser keeps no comment
    assert checklist.read(description, visible=True) == checklist.Reading(True, 1, ())
    assert "[ ] Retrain now · action retrain" in description

    def edit(author: str, html: str) -> None:
        state.edit_work_item(ticket.id, {"System.Description": html}, author=author)

    edit("alice@example.com", "<p>Alice's note.</p>" + description.replace("[ ] Retrain now", "[x] Retrain now"))
    assert app.lifecycle.poll_checklist() == 1
    settle(app, rounds=60)
    assert len(app.registry.runs("tiny")) == 1  # alice may only read here (the local source's rule)
    comments = [c.text for c in state.work_item(ticket.id).comments]
    assert any("@alice@example.com" in c and "needs" in c for c in comments)
    description = state.work_item(ticket.id).fields["System.Description"]
    reading = checklist.read(description, visible=True)
    assert reading.intact and reading.ticked == () and reading.revision == 2
    assert "<p>Alice's note.</p>" in description

    edit("you", description.replace("[ ] Retrain now", "[x] Retrain now"))
    assert app.lifecycle.poll_checklist() == 1
    settle(app, rounds=60)
    runs = app.registry.runs("tiny")
    assert len(runs) == 2 and runs[0].trigger == "command"
