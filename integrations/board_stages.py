"""The stages a retrain ticket goes through on a board, and when the bot moves it to the next.

An episode's ticket walks ``opened`` → ``retraining`` → ``review`` (a validated candidate waits for
``/deploy``) → ``resolved``. On a GitHub Project each stage is an option of the Status field
(``DEFAULT_STATUSES``, overridden by ``MLOPS_GITHUB_PROJECT_STATUSES``: integrations/github_projects.py);
on Azure Boards a state of the work item type (integrations/azure_boards_states.py). Both boards
move a ticket by the same rule (``should_move``). Nothing here talks to a service.
"""

from __future__ import annotations

__all__ = ["DEFAULT_STATUSES", "STAGES", "should_move"]

#: the episode's stages, in the order an episode goes through them
STAGES = ("opened", "retraining", "review", "resolved")
#: the Status option of each stage on a GitHub Project, unless the settings name others
DEFAULT_STATUSES = {"opened": "Todo", "retraining": "In progress", "review": "In review", "resolved": "Done"}


def should_move(target: str, current: str | None, *, last_set: str | None, done: str) -> bool:
    """Whether a transition to ``target`` moves a card whose Status is ``current``.

    Not when it is there already; never out of Done unless the bot itself put it there (a person
    who finished the card has the last word). Any other column is the bot's to leave on its own
    transitions: a person's move stands until the next one.
    """
    def same(a: str | None, b: str | None) -> bool:
        return (a or "").casefold() == (b or "").casefold()

    if current is not None and same(current, target):
        return False
    # out of Done only when the bot put it there itself
    return not (current is not None and same(current, done) and not same(last_set, done))
