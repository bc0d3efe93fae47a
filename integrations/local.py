"""Embedded defaults: every port on this machine, with nothing to configure.

- ``LocalGitSource``: a local git repository; each new commit on the watched branch is a merged
  change; comments are typed at the ``mlops-bot console`` prompt and kept in the state database.
- ``LocalBoard``: retrain tickets on a board in the state database (``mlops-bot board ...``).
- ``ConsoleChat``: chat messages printed to the console, readable, and kept for their threads.
- ``InProcessEngine``: the pipeline run in this process (see ``pipeline.run``).

The tables live in the bot's own state database (the engine is passed in); this module defines
them itself so that ``integrations`` never imports ``bot``.
"""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
import threading
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

import sqlalchemy as sa

from integrations.ports import (
    Change,
    Comment,
    DescribesTickets,
    EditsTicketBody,
    ListsTickets,
    MessageRef,
    PermanentError,
    Permission,
    ReadsCommitStatuses,
    RunHandle,
    TakesTypedComments,
    Target,
    Ticket,
    TicketBody,
    marker_comment,
    with_marker,
)
from integrations.ticket_references import find_ticket_references

__all__ = ["ConsoleChat", "InProcessEngine", "LocalBoard", "LocalGitSource", "create_local_tables", "show_markdown"]


def show_markdown(out: TextIO, heading: str, body: str, *, plain: str, indent: int = 4,
                  force_terminal: bool | None = None) -> None:
    """Print a message of the bot's for a person: on a terminal, ``heading`` in bold and the Markdown
    ``body`` rendered (tables, bold, lists) ``indent`` columns in; anywhere else (a pipe, a file, a
    test's buffer) the text ``plain`` as it is, so logs and scripts read what was written.

    Whether ``out`` is a terminal is rich's call (``isatty``, and ``TTY_COMPATIBLE``/``FORCE_COLOR``
    when set); ``force_terminal`` overrides it.
    """
    # rich is imported only where something is shown: the bot's start-up and idle memory stay lean.
    from rich.console import Console

    console = Console(file=out, force_terminal=force_terminal, highlight=False)
    if not console.is_terminal:
        print(plain, file=out, flush=True)
        return
    from rich.markdown import Markdown
    from rich.padding import Padding
    from rich.text import Text

    console.print(Text(heading, style="bold"))
    if body.strip():
        # hyperlinks=False: the address is printed after the link text, for terminals without OSC 8 links.
        console.print(Padding(Markdown(_terminal_markdown(body), hyperlinks=False), (0, 0, 0, indent)))
    out.flush()


_SUMMARY = re.compile(r"<summary>(.*?)</summary>", re.DOTALL)
_DETAILS_TAG = re.compile(r"</?details[^>]*>")


def _terminal_markdown(body: str) -> str:
    """``<details><summary>Title</summary>`` (folded sections on GitHub) as a bold line: a terminal
    cannot fold, and rich drops HTML, which would lose the section's title."""
    return _DETAILS_TAG.sub("", _SUMMARY.sub(lambda match: f"\n**{match.group(1).strip()}**\n", body))

_metadata = sa.MetaData()

_comments = sa.Table(
    "local_comments", _metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("target_kind", sa.String(16), nullable=False),
    sa.Column("repo", sa.String(200), nullable=False),
    sa.Column("number", sa.Integer, nullable=False),
    sa.Column("author", sa.String(100), nullable=False),
    sa.Column("body", sa.Text, nullable=False),
    sa.Column("by_bot", sa.Boolean, nullable=False, default=False),
    sa.Column("reactions", sa.Text, nullable=False, default=""),
    sa.Column("created_at", sa.String(40), nullable=False),
    sa.Index("ix_local_comments_target", "target_kind", "repo", "number"),  # a thread's comments, found by marker
)
_statuses = sa.Table(
    "local_statuses", _metadata,
    sa.Column("repo", sa.String(200), primary_key=True),
    sa.Column("commit", sa.String(64), primary_key=True),
    sa.Column("context", sa.String(100), primary_key=True),
    sa.Column("state", sa.String(20), nullable=False),
    sa.Column("description", sa.Text, nullable=False),
    sa.Column("url", sa.Text, nullable=False, default=""),
)
_tickets = sa.Table(
    "local_tickets", _metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("key", sa.String(200), nullable=False, index=True),
    sa.Column("title", sa.Text, nullable=False),
    sa.Column("body", sa.Text, nullable=False),
    sa.Column("state", sa.String(10), nullable=False),
    sa.Column("labels", sa.Text, nullable=False, default=""),
    sa.Column("created_at", sa.String(40), nullable=False),
    sa.Column("closed_at", sa.String(40)),
)
_ticket_comments = sa.Table(
    "local_ticket_comments", _metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("ticket_id", sa.Integer, nullable=False, index=True),
    sa.Column("author", sa.String(100), nullable=False),
    sa.Column("body", sa.Text, nullable=False),
    sa.Column("created_at", sa.String(40), nullable=False),
)
# Who saved each ticket body through ``set_body`` (the bot) or ``edit_body`` (a person at the
# console): a tick in the body acts with its editor's permission, as on the other trackers.
_ticket_edits = sa.Table(
    "local_ticket_edits", _metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("ticket_id", sa.Integer, nullable=False, index=True),
    sa.Column("editor", sa.String(100), nullable=False),
    sa.Column("edited_at", sa.String(40), nullable=False),
)
_chat = sa.Table(
    "local_chat", _metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("channel", sa.String(100), nullable=False),
    sa.Column("thread", sa.String(40)),
    sa.Column("text", sa.Text, nullable=False),
    sa.Column("marker", sa.String(300), nullable=False, default=""),
    sa.Column("updated", sa.Integer, nullable=False, default=0),
    sa.Column("created_at", sa.String(40), nullable=False),
    sa.Index("ix_local_chat_marker", "channel", "marker"),  # messages are found by marker
)

# The statements each call runs, built once with bound parameters, so a call does not build,
# coerce and cache-key its SQL again. Parameter names differ from column names: SQLAlchemy keeps
# those for the VALUES and SET clauses.
_comment_by_id = _comments.c.id == sa.bindparam("comment_id")
_on_target = (_comments.c.target_kind == sa.bindparam("target_kind"), _comments.c.repo == sa.bindparam("in_repo"),
              _comments.c.number == sa.bindparam("target_number"))
_NEW_COMMENT = _comments.insert()
_NEW_COMMENTS_AFTER = sa.select(_comments).where(_comments.c.id > sa.bindparam("after")).order_by(_comments.c.id)
_EDIT_COMMENT = _comments.update().where(_comment_by_id).values(body=sa.bindparam("new_body"))
_FIND_BOT_COMMENT = sa.select(_comments.c.id).where(
    *_on_target, _comments.c.by_bot.is_(True), _comments.c.body.contains(sa.bindparam("hidden_marker")),
).order_by(_comments.c.id)
_COMMENTS_ON = sa.select(_comments).where(*_on_target).order_by(_comments.c.id)
_REACTIONS = sa.select(_comments.c.reactions).where(_comment_by_id)
_SET_REACTIONS = _comments.update().where(_comment_by_id).values(reactions=sa.bindparam("new_reactions"))
_FIRST_REACTION = _comments.update().where(_comment_by_id, _comments.c.reactions == "") \
    .values(reactions=sa.bindparam("new_reactions"))
_status_key = (_statuses.c.repo == sa.bindparam("in_repo"), _statuses.c.commit == sa.bindparam("at_commit"),
               _statuses.c.context == sa.bindparam("in_context"))
_SET_STATUS = _statuses.update().where(*_status_key).values(
    state=sa.bindparam("new_state"), description=sa.bindparam("new_description"), url=sa.bindparam("new_url"))
_NEW_STATUS = _statuses.insert()
_STATUS = sa.select(_statuses).where(*_status_key)
_ticket_by_id = _tickets.c.id == sa.bindparam("ticket_id")
_OPEN_TICKET = sa.select(_tickets).where(_tickets.c.key == sa.bindparam("ticket_key"), _tickets.c.state == "open") \
    .order_by(_tickets.c.id)
_NEW_TICKET = _tickets.insert()
_TICKET = sa.select(_tickets).where(_ticket_by_id)
_TICKET_BODY = sa.select(_tickets.c.body).where(_ticket_by_id)
_CLOSE_TICKET = _tickets.update().where(_ticket_by_id, _tickets.c.state == "open") \
    .values(state="closed", closed_at=sa.bindparam("closed"))
_NEW_TICKET_COMMENT = _ticket_comments.insert()
_FIND_TICKET_COMMENT = sa.select(_ticket_comments.c.id).where(
    _ticket_comments.c.ticket_id == sa.bindparam("on_ticket"),
    _ticket_comments.c.body.contains(sa.bindparam("hidden_marker")))
_NEW_MESSAGE = _chat.insert()
_UPDATE_MESSAGE = _chat.update().where(_chat.c.id == sa.bindparam("message_id")) \
    .values(text=sa.bindparam("new_text"), updated=_chat.c.updated + 1)
_find_message = sa.select(_chat).where(_chat.c.channel == sa.bindparam("in_channel"),
                                      _chat.c.marker == sa.bindparam("with_marker"))
_FIND_MESSAGE = _find_message.where(_chat.c.thread.is_(None))
_FIND_THREAD_MESSAGE = _find_message.where(_chat.c.thread == sa.bindparam("in_thread"))


def create_local_tables(bind: sa.Engine | sa.Connection) -> None:
    """Create the tables and indexes that are missing (on a connection: in its transaction)."""
    _metadata.create_all(bind)
    for table in (_comments, _chat):  # indexes added since the tables were first made
        for index in table.indexes:
            index.create(bind, checkfirst=True)


class _Database:
    """An adapter's connection to the state database, kept open between calls (taking one from the
    pool costs more than a call's own statement) and used by one thread at a time.

    ``transaction()`` is one transaction, committed when its block ends, so each write is stored
    when the call that made it returns. The connection goes back to the pool when its adapter is
    collected.
    """

    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine
        self._lock = threading.RLock()  # reentrant: a nested transaction fails loudly instead of hanging
        self._held: list[sa.Connection] = []  # the finalizer closes what it holds, not this object
        weakref.finalize(self, _close_all, self._held)

    @contextmanager
    def transaction(self) -> Iterator[sa.Connection]:
        with self._lock:
            if not self._held:
                self._held.append(self.engine.connect())
            conn = self._held[0]
            try:
                with conn.begin():
                    yield conn
            except BaseException:
                _close_all(self._held)  # a failed transaction may leave it half-way: the next call starts afresh
                raise


def _close_all(connections: list[sa.Connection]) -> None:
    while connections:
        try:
            connections.pop().close()
        except sa.exc.DBAPIError:  # already broken: nothing left to give back
            pass


def _now(clock: Callable[[], datetime]) -> str:
    return clock().isoformat()


#: who types at the console on embedded defaults: the repository's admin
CONSOLE_USER = "you"

class LocalGitSource(ReadsCommitStatuses, TakesTypedComments):
    """A git repository on this machine as the source of merged changes; console comments."""

    name = "local"
    commenters_can_read = False  # the console user owns the repository; anyone else only reads
    has_issues = False  # a comment typed on ticket N is on the tracker's ticket N

    def __init__(self, engine: sa.Engine, repo_dir: Path, *, branch: str | None = None, bot_name: str = "mlops-bot",
                 console_user: str = CONSOLE_USER, clock: Callable[[], datetime] = lambda: datetime.now(UTC),
                 out: TextIO | None = None):
        self.engine, self.repo_dir, self.bot_name, self.console_user = engine, Path(repo_dir), bot_name, console_user
        self.clock, self.out = clock, out
        self._db = _Database(engine)
        self.repo = self.repo_dir.name
        self.branch = branch or self._git("rev-parse", "--abbrev-ref", "HEAD") or "main"

    # --- changes -------------------------------------------------------------------------------

    def merged_changes(self, cursor: str | None) -> tuple[list[Change], str | None]:
        head = self._git("rev-parse", self.branch)
        if head is None:
            return [], cursor
        if cursor is None:
            # A first look: the newest commit is the one change there is to consider.
            commits = [head]
        elif cursor == head:
            return [], cursor
        else:
            listed = self._git("rev-list", "--reverse", "--first-parent", f"{cursor}..{head}")
            commits = listed.split() if listed else [head]
        return [self._change(sha) for sha in commits], head

    def _change(self, sha: str) -> Change:
        fields = (self._git("show", "-s", "--format=%an%x1f%aI%x1f%s%x1f%b", sha) or "").split("\x1f")
        author, when, subject, body = (fields + ["", "", "", ""])[:4]
        paths = self._git("diff-tree", "--no-commit-id", "--name-only", "-r", "--root", "-m", "--first-parent", sha) or ""
        return Change(
            repo=self.repo,
            number=int(self._git("rev-list", "--count", "--first-parent", sha) or 0),
            title=subject,
            body=body.strip(),
            author=author,
            commit=sha,
            merged_at=datetime.fromisoformat(when) if when else self.clock(),
            url=f"file://{self.repo_dir}@{sha[:12]}",
            branch=self.branch,
            paths=tuple(p for p in paths.splitlines() if p),
        )

    def _git(self, *args: str) -> str | None:
        try:
            done = subprocess.run(["git", "-C", str(self.repo_dir), *args], capture_output=True, text=True,
                                  timeout=30, check=False)
        except (OSError, subprocess.SubprocessError):
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    # --- comments ------------------------------------------------------------------------------

    def add_comment(self, target: Target, body: str, *, author: str | None = None) -> Comment:
        """What the console does when a person types a line: a comment on a change or ticket."""
        created = self.clock()
        with self._db.transaction() as conn:
            comment_id = conn.execute(_NEW_COMMENT, dict(
                target_kind=target.kind, repo=target.repo, number=target.number, author=author or self.console_user,
                body=body, by_bot=False, reactions="", created_at=created.isoformat(),
            )).inserted_primary_key[0]
        return Comment(str(comment_id), target, author or self.console_user, body, created)

    def new_comments(self, cursor: str | None) -> tuple[list[Comment], str | None]:
        after = int(cursor or 0)
        with self._db.transaction() as conn:
            rows = conn.execute(_NEW_COMMENTS_AFTER, {"after": after}).all()
        comments = [
            Comment(str(r.id), Target(r.target_kind, r.repo, r.number), r.author, r.body,
                    datetime.fromisoformat(r.created_at), by_bot=bool(r.by_bot))
            for r in rows
        ]
        return comments, str(rows[-1].id) if rows else cursor

    def reply(self, target: Target, body: str, *, marker: str) -> str:
        with self._db.transaction() as conn:
            comment_id = conn.execute(_NEW_COMMENT, dict(
                target_kind=target.kind, repo=target.repo, number=target.number, author=self.bot_name,
                body=with_marker(body, marker), by_bot=True, reactions="", created_at=_now(self.clock),
            )).inserted_primary_key[0]
        self._print(f"[{target}] {self.bot_name}:", body)
        return str(comment_id)

    def edit_reply(self, target: Target, comment_id: str, body: str, *, marker: str) -> None:
        with self._db.transaction() as conn:
            conn.execute(_EDIT_COMMENT, {"comment_id": int(comment_id), "new_body": with_marker(body, marker)})
        self._print(f"[{target}] {self.bot_name} (updated):", body)

    def find_reply(self, target: Target, marker: str) -> str | None:
        with self._db.transaction() as conn:
            row = conn.execute(_FIND_BOT_COMMENT, {**_target_params(target),
                                                   "hidden_marker": marker_comment(marker)}).first()
        return str(row.id) if row else None

    def comments_on(self, target: Target) -> list[Comment]:
        with self._db.transaction() as conn:
            rows = conn.execute(_COMMENTS_ON, _target_params(target)).all()
        return [Comment(str(r.id), target, r.author, r.body, datetime.fromisoformat(r.created_at), by_bot=bool(r.by_bot))
                for r in rows]

    def react(self, comment: Comment, reaction: str) -> None:
        with self._db.transaction() as conn:
            # The first reaction on a comment (the usual case) in one statement; otherwise read, then add.
            if not conn.execute(_FIRST_REACTION, {"comment_id": int(comment.id), "new_reactions": reaction}).rowcount:
                row = conn.execute(_REACTIONS, {"comment_id": int(comment.id)}).first()
                if row is None:
                    return
                reactions = set(filter(None, row.reactions.split(",")))
                if reaction in reactions:
                    return
                conn.execute(_SET_REACTIONS, {"comment_id": int(comment.id),
                                              "new_reactions": ",".join(sorted(reactions | {reaction}))})
        self._print(f"[{comment.target}] {self.bot_name} reacted :{reaction}: to the comment by {comment.author}", "")

    def set_status(self, repo: str, commit: str, *, state: str, description: str, context: str, url: str = "") -> None:
        with self._db.transaction() as conn:
            if not conn.execute(_SET_STATUS, {"in_repo": repo, "at_commit": commit, "in_context": context,
                                              "new_state": state, "new_description": description,
                                              "new_url": url}).rowcount:
                conn.execute(_NEW_STATUS, dict(repo=repo, commit=commit, context=context, state=state,
                                               description=description, url=url))
        self._print(f"[{repo}@{commit[:10]}] status {context}: {state}, {description}", "")

    def status_of(self, repo: str, commit: str, context: str) -> tuple[str, str] | None:
        with self._db.transaction() as conn:
            row = conn.execute(_STATUS, {"in_repo": repo, "at_commit": commit, "in_context": context}).first()
        return (row.state, row.description) if row else None

    def permission(self, repo: str, user: str) -> Permission:
        # On this machine the person at the console owns the repository; anyone else only reads.
        return Permission.admin if user == self.console_user else Permission.read

    def linked_tickets(self, change: Change, patterns: tuple[str, ...]) -> list[tuple[str, int]]:
        return find_ticket_references(f"{change.title}\n{change.body}", patterns)

    def _print(self, heading: str, body: str) -> None:
        if self.out is not None:
            show_markdown(self.out, heading, body,
                          plain=heading if not body else f"{heading}\n{textwrap.indent(body.strip(), '    ')}")


class LocalBoard(ListsTickets, DescribesTickets, EditsTicketBody):
    """Retrain tickets on a board kept in the state database."""

    name = "board"
    reference_prefix = "#"
    tickets_in_repository = False
    hides_comments = True  # bodies are Markdown kept as written

    def __init__(self, engine: sa.Engine, *, clock: Callable[[], datetime] = lambda: datetime.now(UTC),
                 bot_name: str = "mlops-bot", out: TextIO | None = None):
        self.engine, self.clock, self.bot_name, self.out = engine, clock, bot_name, out
        self._db = _Database(engine)

    def find_open(self, key: str, *, opened_by: str | None = None) -> Ticket | None:
        with self._db.transaction() as conn:
            row = conn.execute(_OPEN_TICKET, {"ticket_key": key}).first()
        if row is None or (opened_by is not None and marker_comment(opened_by) not in row.body):
            return None
        return _ticket(row)

    def open(self, key: str, title: str, body: str, labels: tuple[str, ...], *, marker: str) -> Ticket:
        # The key's marker first: an update keeps it (and drops the opener's, needed only until then).
        marked = with_marker(with_marker(body, key), marker if marker != key else "")
        with self._db.transaction() as conn:
            ticket_id = conn.execute(_NEW_TICKET, dict(
                key=key, title=title, body=marked, state="open", labels=",".join(labels),
                created_at=_now(self.clock),
            )).inserted_primary_key[0]
        self._print(f"[board] opened ticket:{ticket_id}: {title}")
        return self.get(ticket_id)

    def update(self, ticket: Ticket, *, title: str | None = None, body: str | None = None,
               labels: tuple[str, ...] | None = None) -> Ticket:
        values: dict[str, Any] = {}
        if title is not None:
            values["title"] = title
        if body is not None:
            with self._db.transaction() as conn:
                old = conn.execute(_TICKET_BODY, {"ticket_id": ticket.id}).scalar_one()
            marker = re.search(r"<!-- mlops-bot:[^>]*-->", old)
            values["body"] = body + (f"\n\n{marker.group(0)}" if marker else "")
        if labels is not None:
            values["labels"] = ",".join(labels)
        if values:
            with self._db.transaction() as conn:
                conn.execute(_tickets.update().where(_tickets.c.id == ticket.id).values(**values))
            self._print(f"[board] updated ticket:{ticket.id}")
        return self.get(ticket.id)

    def comment(self, ticket_id: int, body: str, *, marker: str) -> str:
        with self._db.transaction() as conn:
            comment_id = conn.execute(_NEW_TICKET_COMMENT, dict(
                ticket_id=ticket_id, author=self.bot_name, body=with_marker(body, marker), created_at=_now(self.clock),
            )).inserted_primary_key[0]
        self._print(f"[ticket:{ticket_id}] {self.bot_name}:", body)
        return str(comment_id)

    def add_comment(self, ticket_id: int, body: str, *, author: str) -> str:
        with self._db.transaction() as conn:
            return str(conn.execute(_NEW_TICKET_COMMENT, dict(
                ticket_id=ticket_id, author=author, body=body, created_at=_now(self.clock))).inserted_primary_key[0])

    def find_comment(self, ticket_id: int, marker: str) -> str | None:
        with self._db.transaction() as conn:
            row = conn.execute(_FIND_TICKET_COMMENT, {"on_ticket": ticket_id,
                                                      "hidden_marker": marker_comment(marker)}).first()
        return str(row.id) if row else None

    def close(self, ticket_id: int) -> None:
        with self._db.transaction() as conn:
            changed = conn.execute(_CLOSE_TICKET, {"ticket_id": ticket_id, "closed": _now(self.clock)}).rowcount
        if changed:
            self._print(f"[board] closed ticket:{ticket_id}")

    def get(self, ticket_id: int) -> Ticket | None:
        with self._db.transaction() as conn:
            row = conn.execute(_TICKET, {"ticket_id": ticket_id}).first()
        return _ticket(row) if row else None

    def tickets(self, *, state: str | None = None) -> list[Ticket]:
        query = sa.select(_tickets).order_by(_tickets.c.id)
        if state:
            query = query.where(_tickets.c.state == state)
        with self._db.transaction() as conn:
            return [_ticket(row) for row in conn.execute(query).all()]

    def details(self, ticket_id: int) -> dict[str, Any] | None:
        with self._db.transaction() as conn:
            row = conn.execute(_TICKET, {"ticket_id": ticket_id}).first()
            if row is None:
                return None
            board_comments = conn.execute(sa.select(_ticket_comments).where(_ticket_comments.c.ticket_id == ticket_id)
                                          .order_by(_ticket_comments.c.id)).all()
            # Commands typed on the ticket and the bot's answers to them live with the other comments.
            conversation = conn.execute(sa.select(_comments).where(
                _comments.c.target_kind == "ticket", _comments.c.number == ticket_id).order_by(_comments.c.id)).all()
        comments = sorted(
            [{"author": c.author, "body": _strip_markers(c.body), "created_at": c.created_at}
             for c in [*board_comments, *conversation]],
            key=lambda c: c["created_at"],
        )
        ticket = _ticket(row)
        return {
            "id": ticket.id, "key": ticket.key, "title": ticket.title, "state": ticket.state, "url": ticket.url,
            "labels": list(ticket.labels), "body": _strip_markers(row.body), "created_at": row.created_at,
            "closed_at": row.closed_at, "comments": comments,
        }

    def body(self, ticket_id: int) -> TicketBody | None:
        with self._db.transaction() as conn:
            text = conn.execute(_TICKET_BODY, {"ticket_id": ticket_id}).scalar_one_or_none()
            if text is None:
                return None
            edit = conn.execute(sa.select(_ticket_edits).where(_ticket_edits.c.ticket_id == ticket_id)
                                .order_by(_ticket_edits.c.id.desc()).limit(1)).first()
        return TicketBody(text=text, editor=edit.editor if edit else "", revision=str(edit.id) if edit else "")

    def set_body(self, ticket_id: int, text: str) -> None:
        self.edit_body(ticket_id, text, editor=self.bot_name)

    def edit_body(self, ticket_id: int, text: str, *, editor: str) -> None:
        """Save the body as ``editor`` (the bot, or a person ticking a box at the console)."""
        with self._db.transaction() as conn:
            changed = conn.execute(_tickets.update().where(_tickets.c.id == ticket_id).values(body=text)).rowcount
            if not changed:
                raise PermanentError(f"there is no ticket:{ticket_id} on the board (`mlops-bot board list` lists them)")
            conn.execute(_ticket_edits.insert().values(ticket_id=ticket_id, editor=editor, edited_at=_now(self.clock)))
        if editor != self.bot_name:
            self._print(f"[board] ticket:{ticket_id}'s body edited by {editor}")

    def as_body(self, markdown: str) -> str:
        return markdown

    def _print(self, line: str, body: str = "") -> None:
        if self.out is not None:
            show_markdown(self.out, line, body,
                          plain=line if not body else f"{line}\n{textwrap.indent(body.strip(), '    ')}")


def _target_params(target: Target) -> dict[str, Any]:
    return {"target_kind": target.kind, "in_repo": target.repo, "target_number": target.number}


def _ticket(row) -> Ticket:
    return Ticket(id=row.id, key=row.key, title=row.title, state=row.state, url=f"board#{row.id}",
                  labels=tuple(filter(None, row.labels.split(","))))


class ConsoleChat:
    """Chat printed to the console; messages are kept so threads and updates work as in Slack."""

    name = "console"

    def __init__(self, engine: sa.Engine, *, out: TextIO | None = sys.stdout,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC)):
        self.engine, self.out, self.clock = engine, out, clock
        self._db = _Database(engine)

    def post(self, channel: str, text: str, *, marker: str, blocks: list[dict] | None = None) -> MessageRef:
        message_id = self._store(channel, None, text, marker)
        self._print(f"#{channel}", text)
        return MessageRef(channel, message_id)

    def update(self, message: MessageRef, text: str, *, blocks: list[dict] | None = None) -> None:
        with self._db.transaction() as conn:
            conn.execute(_UPDATE_MESSAGE, {"message_id": int(message.id), "new_text": text})
        self._print(f"#{message.channel} (message {message.id} updated)", text)

    def reply(self, parent: MessageRef, text: str, *, marker: str) -> MessageRef:
        message_id = self._store(parent.channel, parent.id, text, marker)
        self._print(f"#{parent.channel} ↳ thread of message {parent.id}", text)
        return MessageRef(parent.channel, message_id, thread=parent.id)

    def find_message(self, channel: str, marker: str, *, thread: str | None = None) -> MessageRef | None:
        params = {"in_channel": channel, "with_marker": marker}
        with self._db.transaction() as conn:
            if thread:
                row = conn.execute(_FIND_THREAD_MESSAGE, {**params, "in_thread": thread}).first()
            else:
                row = conn.execute(_FIND_MESSAGE, params).first()
        return MessageRef(row.channel, str(row.id), thread=row.thread) if row else None

    def messages(self, channel: str | None = None) -> list[dict[str, Any]]:
        query = sa.select(_chat).order_by(_chat.c.id)
        if channel:
            query = query.where(_chat.c.channel == channel)
        with self._db.transaction() as conn:
            return [dict(row._mapping) for row in conn.execute(query).all()]

    def _store(self, channel: str, thread: str | None, text: str, marker: str) -> str:
        with self._db.transaction() as conn:
            return str(conn.execute(_NEW_MESSAGE, dict(channel=channel, thread=thread, text=text, marker=marker,
                                                       updated=0, created_at=_now(self.clock))).inserted_primary_key[0])

    def _print(self, heading: str, text: str) -> None:
        if self.out is not None:
            show_markdown(self.out, f"💬 {heading}", text, indent=3,
                          plain=f"💬 {heading}\n{textwrap.indent(text.strip(), '   │ ')}")


class InProcessEngine:
    """Runs the pipeline on this machine, to the end, before ``start`` returns.

    ``isolated`` (the default): the project's code (train, package, validate) runs in a child process
    with none of this process's secrets, memory or fate (pipeline/child.py); this process keeps the
    registry. ``isolated=False`` runs it all in this process (quicker: for tests).
    """

    name = "local"

    def __init__(self, registry, projects: dict[str, Path], *, clock: Callable[[], datetime] = lambda: datetime.now(UTC),
                 production_data=None, isolated: bool = True):
        self.registry, self.projects, self.clock = registry, projects, clock
        self.production_data = production_data  # pipeline.run.ProductionFolders: labelled rows for retrains
        self.isolated = isolated

    def start(self, project: str, *, run_id: str, trigger: str, reason: str, context: dict[str, Any],
              promote: bool = True) -> RunHandle:
        from pipeline.run import run_pipeline

        finished = self.status(run_id)
        if finished is not None and finished.status != "running":
            return finished  # asked again after a restart: the run already happened
        if project not in self.projects:
            raise KeyError(f"no model project named {project!r}; known: {', '.join(self.projects)}")
        result = run_pipeline(self.projects[project], self.registry, trigger=trigger, reason=reason, run_id=run_id,
                              context=context, clock=self.clock, promote=promote,
                              production_data=self.production_data,
                              require_new_data=bool(context.get("require_new_data")), isolated=self.isolated)
        return RunHandle(result.run_id, result.status, result=result.to_dict())

    def status(self, run_id: str) -> RunHandle | None:
        from pipeline.registry_port import RegistryError

        try:
            record = self.registry.get_run(run_id)
        except RegistryError:
            return None
        details = record.details or {}
        result = {
            "run_id": record.run_id, "model": record.model, "status": record.status, "trigger": record.trigger,
            "reason": record.reason, "failed_stage": record.failed_stage, "error": record.error,
            "version": record.version, "promoted": details.get("promoted", False),
            "validation": details.get("validation"), "stages": record.stages,
            "data": details.get("data"), "recent": details.get("recent"), "nothing_new": details.get("nothing_new"),
            "reasons": ([record.error] if record.error else [details["nothing_new"]] if details.get("nothing_new")
                        else list((details.get("validation") or {}).get("reasons", []))),
        }
        return RunHandle(record.run_id, record.status, result=result)



def _strip_markers(body: str) -> str:
    # "mlops-bot " too: the checklist's section markers and box ids (bot/checklist.py)
    return re.sub(r"\s*<!-- mlops-bot[: ][^>]*-->", "", body).strip()
