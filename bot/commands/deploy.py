"""``/deploy [version] [--force]``: put a version in production.

Without a version, the newest candidate that passed validation and is newer than production. A
version that did not pass validation is refused unless ``--force`` is given with its number.
"""

from __future__ import annotations

import re

from bot.commands.base import CommandContext, CommandSpec, Promote, Reply, Request, code, format_metric, usage_reply
from integrations.ports import Permission

__all__ = ["SPEC"]

_VERSION = re.compile(r"[vV]?([0-9]{1,9})")
_FORCE = "--force"
_LISTED = 10  # versions named when the one asked for does not exist


def handle(request: Request, ctx: CommandContext) -> Reply:
    parsed = _arguments(request.invocation.args)
    if isinstance(parsed, str):
        return usage_reply(request, SPEC.usage, parsed, SPEC.examples[1])
    number, force = parsed
    model = request.model
    versions = {int(v["version"]): v for v in ctx.versions(model)}
    production = ctx.production(model)
    live = production["version"] if production else None

    if number is None:
        newer = [v for n, v in versions.items() if v.get("stage") == "candidate" and v.get("passed")
                 and (live is None or n > live)]
        if not newer:
            beyond = f" newer than production v{live}" if live is not None else ""
            return Reply(
                f"@{request.author}, **{model}** has no candidate{beyond} that passed validation. "
                "Type `/retrain` to train one, or `/deploy <version>` to pick one."
            )
        chosen = max(newer, key=lambda v: int(v["version"]))
        number = int(chosen["version"])
    else:
        chosen = versions.get(number)
        if chosen is None:
            return Reply(f"@{request.author}, **{model}** has no v{number}. {_available(versions)}")
        if number == live or chosen.get("stage") == "production":
            return Reply(f"@{request.author}, v{number} of **{model}** is already in production.")
        if not chosen.get("passed"):
            if not force:
                return Reply(
                    f"@{request.author}, v{number} of **{model}** did not pass validation"
                    f"{_comparison(chosen, production)}, so I won't deploy it. "
                    f"If you are sure, type `/deploy {number} --force`."
                )

    reason = f"/deploy by @{request.author}"
    if not chosen.get("passed"):
        reason += " (--force: validation did not pass)"
    replacing = f", replacing v{live}" if live is not None else ""
    return Reply(
        f"Deploying v{number} of **{model}**{replacing}. I'll reply here when it is live.",
        (Promote(version=number, reason=reason),),
    )


def _arguments(args: str) -> tuple[int | None, bool] | str:
    """(version or None, force), or what is wrong with the arguments."""
    number: int | None = None
    force = False
    for word in args.split():
        version = _VERSION.fullmatch(word)
        if word.lower() == _FORCE and not force:
            force = True
        elif version and number is None:
            number = int(version.group(1))
        else:
            return f"I could not read {code(word)} as a version number."
    if force and number is None:
        return "`--force` needs the version to force."
    return number, force


def _available(versions: dict[int, dict]) -> str:
    if not versions:
        return "It has no versions yet. Type `/retrain` to train one."
    shown = sorted(versions)[-_LISTED:]
    names = []
    for n in shown:
        v = versions[n]
        notes = [str(v.get("stage", "unknown"))]
        if v.get("stage") != "production":
            notes.append("passed" if v.get("passed") else "did not pass")
        names.append(f"v{n} ({', '.join(notes)})")
    older = "" if len(shown) == len(versions) else f" and {len(versions) - len(shown)} older"
    return f"Available: {', '.join(names)}{older}."


def _comparison(version: dict, production: dict | None) -> str:
    """The primary metric of the version next to production's, when both are known."""
    if not production or not production.get("primary_metric"):
        return ""
    metric = production["primary_metric"]
    mine = (version.get("metrics") or {}).get(metric)
    theirs = (production.get("metrics") or {}).get(metric)
    if mine is None:
        return ""
    return (f" ({metric} {format_metric(mine)}; production v{production['version']} has "
            f"{format_metric(theirs)})")


SPEC = CommandSpec(
    name="deploy",
    pattern=re.compile(r"(?mi)^/deploy(?:[ \t]+(?P<args>.*?))?[ \t]*$"),
    usage="/deploy [version] [--force]",
    summary="Deploy a version; without one, the newest candidate that passed validation.",
    examples=("/deploy", "/deploy 4", "/deploy 4 --force"),
    permission=Permission.maintain,
    handler=handle,
)
