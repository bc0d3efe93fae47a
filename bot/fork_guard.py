"""Which code a command on a pull request runs, and the fork rule.

A command typed on a pull request that runs the pipeline (``/validate``, ``/retrain``) runs that
pull request's code: its head commit while it is open or closed unmerged, its merge commit once
merged. The commit goes into the run's origin, so the engine fetches exactly that commit into a
workspace, and the result is reported as that commit's status.

From a fork, nothing runs until someone with ``/ok-to-test``'s permission (write or higher by
default) has typed ``/ok-to-test`` on the pull request while its head was that very commit; a new
push needs a new ``/ok-to-test``. Everyone else gets a polite refusal naming who may allow it.

Only source control that can say where a change's head is (``change_head``, see
``integrations/ports.py``) is checked; elsewhere (the local repository, whose changes are already
merged commits) commands run as before.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from bot.commands import Reply, RunPipeline, required_permission
from bot.commands.ok_to_test import AllowHead
from integrations.ports import ChangeHead, Comment, PermanentError, Permission, ReportsChangeHeads

__all__ = ["code_under_test"]

_NAMESPACE = "ok_to_test"  # state: "<repo>#<number>" -> {"commit", "by"}


def code_under_test(lifecycle: Any, comment: Comment, reply: Reply) -> tuple[Reply, dict[str, Any]]:
    """The reply to send (maybe a refusal instead) and what the runs it asks for add to their origin."""
    allows = [action for action in reply.actions if isinstance(action, AllowHead)]
    runs = any(isinstance(action, RunPipeline) for action in reply.actions)
    reply = replace(reply, actions=tuple(a for a in reply.actions if not isinstance(a, AllowHead)))
    target, scm = comment.target, lifecycle.scm
    if target.kind != "change" or not (runs or allows) or not isinstance(scm, ReportsChangeHeads):
        return reply, {}
    try:
        head: ChangeHead = scm.change_head(target.repo, target.number)
    except PermanentError:
        return reply, {}  # no such pull request here: nothing of its code can run
    key = f"{target.repo}#{target.number}"
    if allows:
        if not head.from_fork:
            return Reply(f"@{comment.author}, this pull request is not from a fork: commands run its code "
                         "without `/ok-to-test`."), {}
        lifecycle.store.put_state(_NAMESPACE, key, {"commit": head.commit, "by": allows[0].by})
        return replace(reply, text=f"Thanks @{comment.author}: commands on this pull request may now run its code "
                                   f"at `{head.commit[:7]}`. A new push needs a new `/ok-to-test`."), {}
    if head.state == "merged" and head.merge_commit:
        return reply, {"commit": head.merge_commit, "change": target.number}
    origin = {"commit": head.commit, "change": target.number, "head_ref": f"refs/pull/{target.number}/head",
              "head_repo": head.head_repo, "from_fork": head.from_fork}
    if not head.from_fork:
        return reply, origin
    allowed = lifecycle.store.get_state(_NAMESPACE, key) or {}
    if allowed.get("commit") == head.commit:
        return reply, {**origin, "allowed_by": allowed.get("by")}
    return Reply(_refusal(comment.author, head, allowed, lifecycle.settings.command_permissions)), {}


def _refusal(author: str, head: ChangeHead, allowed: dict[str, Any], overrides: dict[str, str]) -> str:
    required = required_permission("ok-to-test", overrides)
    levels = [level.name for level in Permission if level >= required]
    who = levels[0] if len(levels) == 1 else f"{', '.join(levels[:-1])} or {levels[-1]}"
    fork = f"a fork (`{head.head_repo}`)" if head.head_repo else "a fork that no longer exists"
    earlier = (f" `/ok-to-test` was given for an earlier commit (`{str(allowed['commit'])[:7]}`), and the "
               "pull request has changed since." if allowed.get("commit") else "")
    return (f"@{author}, this pull request comes from {fork}, so I run its code only once someone with "
            f"{who} access has reviewed it and typed `/ok-to-test` here (for its latest commit "
            f"`{head.commit[:7]}`).{earlier} Nothing was run.")
