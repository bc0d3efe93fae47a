"""The GitHub adapter and the bot on GitHub, through the real PyGithub client and the emulator."""

from __future__ import annotations

import pytest

from integrations.github import GitHubAuth, GitHubClient, GitHubIssues, GitHubSource, connect
from integrations.ports import Comment, PermanentError, Permission, Target, TransientError

REPO = "acme/model"
PROJECT_FILES = ["models/tiny/mlops.toml"]


@pytest.fixture
def github(github_emulator):
    state = github_emulator.state
    state.add_repo(REPO)
    for login, role in [("alice", "admin"), ("maya", "maintain"), ("bob", "write"), ("tim", "triage"), ("rita", "read")]:
        state.add_collaborator(REPO, login, role)
    return github_emulator


def adapters(emulator, **client_options):
    gh = connect(GitHubAuth(token=emulator.token), base_url=emulator.base_url, timeout=1, retry=None)
    client = GitHubClient(gh, REPO, bot_login="mlops-bot", **client_options)
    return GitHubSource(client), GitHubIssues(client)


def test_comments_are_polled_with_one_conditional_request(github):
    source, _ = adapters(github)
    pull = github.state.open_pull(REPO, "Tune", "body", "bob", files=PROJECT_FILES)
    github.state.add_comment(REPO, pull, "bob", "/retrain please")
    comments, cursor = source.new_comments(None)
    assert [(c.author, c.body, c.target) for c in comments] == [("bob", "/retrain please", Target("change", REPO, pull))]

    github.log.clear()
    for _ in range(3):  # idle cycles: GitHub answers 304, which is free
        again, cursor = source.new_comments(cursor)
        assert again == []
    assert github.log.count() == 3 and github.log.charged() == 0


def test_a_burst_of_comments_within_one_second_is_read_whole(github):
    """Timestamps are to the second and ``since`` is inclusive: more than a page of comments at the
    cursor's second must be read page by page, or the poller would see the first page for ever."""
    source, _ = adapters(github)
    pull = github.state.open_pull(REPO, "Tune", "", "bob", files=PROJECT_FILES)
    _, cursor = source.new_comments(None)
    bodies = [f"/status {n}" for n in range(250)]
    for body in bodies:  # the emulator's clock stands still: all in one second
        github.state.add_comment(REPO, pull, "bob", body)
    github.faults.add(r"GET /repos/acme/model/issues/comments\?.*\bpage=2\b.*", 502)  # the second page, once
    with pytest.raises(TransientError):
        source.new_comments(cursor)
    comments, after = source.new_comments(cursor)  # asked again whole, not answered 304
    assert [c.body for c in comments] == bodies
    github.state.clock.advance(seconds=1)
    github.state.add_comment(REPO, pull, "bob", "/help")  # behind the full first page of that second
    later, _ = source.new_comments(after)
    assert later[-1].body == "/help"


def test_merges_are_found_after_the_first_look(github):
    source, _ = adapters(github)
    old = github.state.open_pull(REPO, "Old", "", "bob", files=PROJECT_FILES)
    github.state.merge_pull(REPO, old)
    changes, cursor = source.merged_changes(None)
    assert changes == []  # history before the bot started is not news
    github.emulator_clock = github.state.clock.advance(seconds=5)
    new = github.state.open_pull(REPO, "Tune the model", "Fixes #7", "bob", files=PROJECT_FILES)
    sha = github.state.merge_pull(REPO, new)
    changes, cursor = source.merged_changes(cursor)
    assert [(c.number, c.commit, c.branch, c.author) for c in changes] == [(new, sha, "main", "bob")]
    assert source.change_paths(REPO, new) == PROJECT_FILES
    assert source.linked_tickets(changes[0], (r"#(\d+)",)) == [("local", 7)]


def test_commit_messages_of_a_pull_request_over_two_pages(github):
    source, _ = adapters(github)
    messages = [f"Step {n}" for n in range(1, 130)] + ["Tune the forest\n\nFixes AB#42"]
    pull = github.state.open_pull(REPO, "Tune", "", "bob", files=PROJECT_FILES, commits=messages)
    github.log.clear()
    assert source.change_messages(REPO, pull) == messages  # oldest first, the head's last
    assert github.log.count("GET", path=rf"(/api/v3)?/repos/{REPO}/pulls/{pull}/commits", status=200) == 2
    single = github.state.open_pull(REPO, "One commit", "", "bob")
    assert source.change_messages(REPO, single) == ["One commit"]  # by default, one commit titled as the pull


def test_a_server_error_reading_commit_messages_is_transient(github):
    source, _ = adapters(github)
    pull = github.state.open_pull(REPO, "Tune", "", "bob", commits=["AB#7 first", "second"])
    github.faults.add("pulls/list-commits", 502)
    with pytest.raises(TransientError, match="502"):
        source.change_messages(REPO, pull)
    assert source.change_messages(REPO, pull) == ["AB#7 first", "second"]  # the next try reads them all


def test_replies_edits_reactions_statuses_and_markers(github):
    source, _ = adapters(github)
    pull = github.state.open_pull(REPO, "Tune", "", "bob", files=PROJECT_FILES)
    comment_id = github.state.add_comment(REPO, pull, "bob", "/status")
    target = Target("change", REPO, pull)
    reply = source.reply(target, "Working on it", marker="m-1")
    assert source.find_reply(target, "m-1") == reply and source.find_reply(target, "m-2") is None
    source.edit_reply(target, reply, "Done", marker="m-1")
    assert github.state.comment(int(reply)).body.startswith("Done") and "<!-- mlops-bot:m-1 -->" in github.state.comment(int(reply)).body
    comment = Comment(str(comment_id), target, "bob", "/status", github.state.clock.now())
    source.react(comment, "eyes")
    source.react(comment, "eyes")  # the same reaction twice is one reaction
    assert [r.content for r in github.state.reactions(comment_id)] == ["eyes"]
    sha = github.state.issue(REPO, pull).pull.head_sha
    source.set_status(REPO, sha, state="success", description="v2 promoted", context="mlops-bot/pipeline")
    assert [(s.state, s.context) for s in github.state.statuses(REPO, sha)] == [("success", "mlops-bot/pipeline")]


@pytest.mark.parametrize(("login", "level"), [("alice", Permission.admin), ("maya", Permission.maintain),
                                              ("bob", Permission.write), ("tim", Permission.triage),
                                              ("rita", Permission.read), ("stranger", Permission.none)])
def test_permission_levels(github, login, level):
    source, _ = adapters(github)
    assert source.permission(REPO, login) == level


def test_retrain_issue_opened_found_updated_commented_closed(github):
    _, issues = adapters(github)
    assert issues.find_open("retrain:tiny") is None
    ticket = issues.open("retrain:tiny", "Retrain tiny", "drift table", ("drift:high",), marker="retrain:tiny")
    assert issues.find_open("retrain:tiny") == ticket
    assert set(ticket.labels) == {"mlops-bot", "drift:high"}
    updated = issues.update(ticket, body="worse drift", labels=("drift:medium",))
    assert issues.find_open("retrain:tiny").id == ticket.id  # the marker survives the update
    assert "drift:medium" in updated.labels
    comment = issues.comment(ticket.id, "Drift changed", marker="c-1")
    assert issues.find_comment(ticket.id, "c-1") == comment
    issues.close(ticket.id)
    assert issues.get(ticket.id).state == "closed" and issues.find_open("retrain:tiny") is None


@pytest.mark.parametrize(
    ("fault", "expected", "unknown"),
    [(500, TransientError, True), (502, TransientError, True), ("timeout", TransientError, True),
     ("lost_response", TransientError, True), ("rate_limit_primary", TransientError, False),
     ("rate_limit_secondary", TransientError, False), ("429", TransientError, False)],
)
def test_write_faults_become_the_ports_errors(github, fault, expected, unknown):
    source, _ = adapters(github)
    pull = github.state.open_pull(REPO, "Tune", "", "bob", files=PROJECT_FILES)
    github.faults.add(r"POST (/api/v3)?/repos/acme/model/issues/\d+/comments", fault, hold=1.5)
    with pytest.raises(expected) as caught:
        source.reply(Target("change", REPO, pull), "hello", marker="m")
    assert caught.value.outcome_unknown is unknown
    if fault.__class__ is str and fault.startswith(("rate", "429")):
        assert caught.value.retry_after and caught.value.retry_after > 0


def test_not_found_is_permanent(github):
    source, _ = adapters(github)
    with pytest.raises(PermanentError, match="404"):
        source.reply(Target("change", REPO, 999), "hello", marker="m")


def test_the_budget_is_kept_before_the_limit_runs_out(github):
    github_limit = github.rate_limit_remaining()
    source, _ = adapters(github, reserve=github_limit - 2)
    pull = github.state.open_pull(REPO, "Tune", "", "bob")
    source.reply(Target("change", REPO, pull), "one", marker="a")
    with pytest.raises(TransientError, match="rate limit nearly spent") as caught:
        for n in range(5):
            source.reply(Target("change", REPO, pull), "more", marker=f"b{n}")
    assert caught.value.retry_after > 0


def test_a_reply_to_a_missing_pull_request_is_given_up_at_once(github, make_app):
    from integrations.ports import Target as PortTarget

    app = make_app(github_repository=REPO, github_token=github.token, github_api_url=github.base_url,
                   github_timeout_s=1, project_paths=["models/tiny"])
    app.lifecycle.store.ingest("manual", "test", "test", {}, [
        app.lifecycle.planner.reply(PortTarget("change", REPO, 424242), "reply:424242", "hello")])
    app.deliver()
    dead = app.store.effects(status="dead")
    assert [e.key for e in dead] == ["reply:424242"] and dead[0].attempts == 1
    assert "GitHub answered 404" in dead[0].last_error


def test_the_cycle_budget_holds_requests_until_the_next_poll(github):
    from integrations.github import CycleBudgetSpent

    source, _ = adapters(github, cycle_budget=3, cycle_s=45)
    _, cursor = source.merged_changes(None)  # a poll starts the cycle: 1 of 3
    assert source.permission(REPO, "bob") == Permission.write
    assert source.permission(REPO, "alice") == Permission.admin  # 3 of 3
    github.log.clear()
    with pytest.raises(CycleBudgetSpent) as spent:
        source.permission(REPO, "maya")
    assert spent.value.retry_after == 45 and github.log.count() == 0  # waits: nothing was sent
    source.new_comments(None)  # the poll's own requests are always made
    source.merged_changes(cursor)  # the next cycle
    assert source.permission(REPO, "maya") == Permission.maintain


def test_an_answer_not_all_taken_is_asked_for_again_without_its_etag(github):
    source, _ = adapters(github)
    pull = github.state.open_pull(REPO, "Tune", "", "bob", files=PROJECT_FILES)
    for n in range(2):
        github.state.add_comment(REPO, pull, "bob", f"/status {n}")
    first, cursor = source.new_comments("2000-01-01T00:00:00Z")
    # The caller stopped part-way and kept its cursor: a 304 now would hide the comments it did not handle.
    github.log.clear()
    again, _ = source.new_comments("2000-01-01T00:00:00Z")
    assert github.log.count(status=200) == 1
    assert [c.body for c in again] == [c.body for c in first] == ["/status 0", "/status 1"]
    source.new_comments(cursor)  # taken at last: from here polls are conditional again
    github.log.clear()
    assert source.new_comments(cursor) == ([], cursor)
    assert github.log.count(status=304) == 1 and github.log.charged() == 0
