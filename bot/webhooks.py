"""The thin HTTP entry: verify, parse into events, hand them to the same dispatcher as polling.

``POST /webhooks/github`` checks ``X-Hub-Signature-256`` in constant time, then stores the event
(once: its natural key is the same as the poller's) and answers 202; the outbox does the work.
``POST /webhooks/slack/commands`` takes ``/mlops <command>``, signed with the app's signing secret;
``POST /webhooks/slack/interactions`` the clicks on the bot's buttons (``bot/interactions.py``).
``GET /healthz`` says the process is alive; ``GET /readyz`` and ``GET /metrics`` are in ``bot/observability.py``.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import urllib.parse
from collections.abc import Callable

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from bot import messages
from bot.app import BotApp
from bot.events import ChangeMerged, CommandGiven, TicketClosed
from bot.interactions import Interactions, verify_slack_request
from bot.observability import routes as observability_routes
from integrations.github_payloads import parse_delivery
from integrations.ports import Comment, Target, TransientError

__all__ = ["create_app"]

log = logging.getLogger("mlops_bot.webhooks")



def create_app(bot: BotApp, *, wake: Callable[[], None] = lambda: None) -> Starlette:
    settings = bot.settings
    limit = settings.webhook_max_bytes

    async def read_body(request: Request) -> bytes | JSONResponse:
        """The raw body (signatures are over the exact bytes), or a 413 answer past the limit."""
        too_large = _error(413, f"the body is larger than {limit} bytes (MLOPS_WEBHOOK_MAX_BYTES)")
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > limit:
            return too_large
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > limit:
                return too_large
        return bytes(body)

    async def github(request: Request) -> JSONResponse:
        secret = settings.github_webhook_secret
        if secret is None:
            return _error(403, "GitHub webhooks are off: set GITHUB_WEBHOOK_SECRET to the secret of the webhook")
        body = await read_body(request)
        if isinstance(body, JSONResponse):
            return body
        signature = request.headers.get("x-hub-signature-256", "")
        expected = "sha256=" + hmac.new(secret.get_secret_value().encode(), body, hashlib.sha256).hexdigest()
        if not signature or not hmac.compare_digest(signature.encode(), expected.encode()):
            return _error(401, "bad or missing X-Hub-Signature-256; check that the webhook's secret matches "
                               "GITHUB_WEBHOOK_SECRET")
        try:
            payload = json.loads(body)
        except (UnicodeDecodeError, ValueError):
            return _error(400, "the body is not JSON; set the webhook's content type to application/json")
        event = request.headers.get("x-github-event", "")
        delivery = request.headers.get("x-github-delivery", "")
        try:
            fact = parse_delivery(event, payload, bot_login=settings.bot_name)
        except (ValueError, TypeError, KeyError, AttributeError) as exc:  # a field of the wrong shape
            return _error(400, f"cannot read this {event or 'unnamed'} delivery: {exc}")
        try:
            return await _run_sync(lambda: _accept(bot, fact, delivery, wake))
        except TransientError as exc:
            # Nothing was stored; the poller will bring the same change or comment again.
            log.warning("delivery %s not stored yet: %s", delivery, type(exc).__name__)
            return _error(503, "GitHub could not be asked for details just now; the poller will pick this up")

    async def slack_signed(request: Request, what: str) -> tuple[bytes, str] | JSONResponse:
        """The body and timestamp of a request Slack signed within the window, or the answer refusing it."""
        secret = settings.slack_signing_secret
        if secret is None:
            return _error(403, f"Slack {what} are off: set SLACK_SIGNING_SECRET to the Slack app's signing secret")
        body = await read_body(request)
        if isinstance(body, JSONResponse):
            return body
        timestamp = request.headers.get("x-slack-request-timestamp", "")
        problem = verify_slack_request(secret.get_secret_value(), body=body, now=bot.clock().timestamp(),
                                       timestamp=timestamp, signature=request.headers.get("x-slack-signature", ""))
        return _error(401, problem) if problem else (body, timestamp)

    async def slack_commands(request: Request) -> JSONResponse:
        signed = await slack_signed(request, "commands")
        if isinstance(signed, JSONResponse):
            return signed
        body, timestamp = signed
        form = {key: values[0] for key, values in urllib.parse.parse_qs(body.decode("utf-8", "replace")).items()}
        if not form.get("user_id") or not form.get("channel_id"):
            return _error(400, "not a slash command: user_id and channel_id are missing")
        return await _run_sync(lambda: _slash_command(bot, form, timestamp, wake))

    clicks = Interactions(bot, wake=wake)

    async def slack_interactions(request: Request) -> Response:
        """Clicks on the bot's buttons: verified as slash commands are, then ``bot/interactions.py``."""
        signed = await slack_signed(request, "buttons")
        if isinstance(signed, JSONResponse):
            return signed
        form = urllib.parse.parse_qs(signed[0].decode("utf-8", "replace"))
        if not form.get("payload"):
            return _error(400, "not an interaction: the payload field is missing")
        return await _run_sync(lambda: clicks.handle(form["payload"][0]))

    async def azure_devops(request: Request) -> JSONResponse:
        secret = settings.azure_devops_webhook_secret
        if secret is None:
            return _error(403, "Azure DevOps service hooks are off: set AZURE_DEVOPS_WEBHOOK_SECRET to the hook's "
                               "basic-authentication password")
        if not _basic_password_matches(request.headers.get("authorization", ""), secret.get_secret_value()):
            return JSONResponse({"error": "basic authentication required: the service hook's password must be "
                                          "AZURE_DEVOPS_WEBHOOK_SECRET"}, status_code=401,
                                headers={"WWW-Authenticate": 'Basic realm="mlops-bot"'})
        body = await read_body(request)
        if isinstance(body, JSONResponse):
            return body
        try:
            payload = json.loads(body)
        except (UnicodeDecodeError, ValueError):
            return _error(400, "the body is not JSON")
        from integrations.azure_payloads import parse_service_hook

        try:
            fact = parse_service_hook(payload)
        except (ValueError, TypeError, KeyError, AttributeError) as exc:  # a field of the wrong shape
            return _error(400, f"cannot read this service hook: {exc}")
        if fact is None:
            return _error(400, "not a service hook delivery: no eventType and resource")
        return await _run_sync(lambda: _accept_azure(bot, fact, str(payload.get("id") or ""), wake))

    async def mlflow(request: Request) -> JSONResponse:
        from integrations.mlflow_webhooks import WebhookError, verify_webhook, webhook_event

        secret = settings.mlflow_webhook_secret
        if secret is None or not settings.mlflow_tracking_uri:
            return _error(403, "MLflow webhooks are off: set MLFLOW_TRACKING_URI and MLFLOW_WEBHOOK_SECRET (the "
                               "webhook's secret in MLflow)")
        body = await read_body(request)
        if isinstance(body, JSONResponse):
            return body
        try:
            payload = verify_webhook(secret.get_secret_value(), dict(request.headers), body)
        except WebhookError as exc:
            return _error(401, str(exc))
        fact = webhook_event(payload)
        if fact["model"] not in bot.router.lifecycles:
            return JSONResponse({"status": "ignored", "reason": f"model {fact['model']!r} is not this bot's"})
        # A hint, not the truth: deliveries come late, twice or out of order. The next cycle reads
        # the registry's aliases (one request) and records what moved, once.
        wake()
        return JSONResponse({"status": "accepted", "event": fact["event"]}, status_code=202)

    def healthz(_request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok"})

    return Starlette(routes=[Route("/webhooks/github", github, methods=["POST"]),
                             Route("/webhooks/slack/commands", slack_commands, methods=["POST"]),
                             Route("/webhooks/slack/interactions", slack_interactions, methods=["POST"]),
                             Route("/webhooks/azure-devops", azure_devops, methods=["POST"]),
                             Route("/webhooks/mlflow", mlflow, methods=["POST"]),
                             Route("/healthz", healthz, methods=["GET"]), *observability_routes(bot)])


def _slash_command(bot: BotApp, form: dict[str, str], timestamp: str, wake: Callable[[], None]) -> JSONResponse:
    """``/mlops retrain because ...``: refusals and read-only answers at once, ephemerally; other work
    is stored as a command (once) and answered in a thread of the channel."""
    from bot.commands import REGISTRY, Request, parse, required_permission, respond, unknown_reply
    from bot.commands.base import refusal
    from bot.lifecycle import CommandView
    from bot.routing import UnknownProject

    settings = bot.settings
    text = form.get("text", "").strip() or "help"
    identity = form.get("trigger_id") or f"{form['user_id']}:{timestamp}:{text}"
    number = int(hashlib.sha1(identity.encode()).hexdigest()[:8], 16)
    target = Target("chat", form["channel_id"], number)
    author = form["user_id"] if form["user_id"] in settings.slack_permissions or \
        form.get("user_name") not in settings.slack_permissions else form["user_name"]
    parsed = parse("/" + text, limit=1)
    if not parsed.invocations:
        return _ephemeral(unknown_reply(parsed.unknown or [text.split()[0]]).text)
    invocation = parsed.invocations[0]
    # ``/mlops status churn``: where the bot serves several model projects, the first argument may name one.
    try:
        lifecycle = bot.router.named(invocation.args.partition(" ")[0]) if invocation.args else bot.lifecycle
    except UnknownProject:
        lifecycle = bot.lifecycle
    invocation = lifecycle.project.without_name(invocation)
    request = Request(invocation=invocation, target=target, author=author, model=lifecycle.project.name,
                      permission=lifecycle.permission(target, author))
    overrides = settings.command_permissions
    required = required_permission(invocation.name, overrides)
    if request.permission < required:
        return _ephemeral(refusal(REGISTRY[invocation.name], request, required).text)
    if invocation.name in {"help", "status"}:
        return _ephemeral(respond(request, CommandView(lifecycle), overrides=overrides).text)
    comment = Comment(id=identity, target=target, author=author, body="/" + text, created_at=bot.clock())
    if bot.router.handle(CommandGiven("slack", comment), source="slack"):
        wake()
    return _ephemeral(f"On it: `/mlops {text}`. I'll answer in a thread in this channel.")


def _basic_password_matches(header: str, secret: str) -> bool:
    """Azure service hooks send basic authentication; only the password is checked."""
    import base64
    import binascii

    if not header.lower().startswith("basic "):
        return False
    try:
        decoded = base64.b64decode(header[6:].strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return False
    return hmac.compare_digest(decoded.partition(":")[2].encode(), secret.encode())


def _accept_azure(bot: BotApp, fact: dict, notification: str, wake: Callable[[], None]) -> JSONResponse:
    if notification and bot.store.get_state("deliveries", f"azure:{notification}"):
        return JSONResponse({"status": "duplicate", "delivery": notification}, status_code=200)
    if fact["kind"] == "ignored":
        answer = JSONResponse({"status": "ignored", "reason": f"{fact.get('event')}: not used by the bot"},
                              status_code=202)
    else:
        event = {
            "comment": lambda: CommandGiven("azure", fact["comment"]),
            "merged": lambda: ChangeMerged("azure", fact["change"]),
            "ticket_closed": lambda: TicketClosed("azure", int(fact["ticket_id"])),
        }[fact["kind"]]()
        new = bot.router.handle(event, source="azure")
        answer = JSONResponse({"status": "accepted" if new else "seen before", "event": event.key}, status_code=202)
        if new:
            wake()
    if notification:
        bot.store.put_state("deliveries", f"azure:{notification}", {"at": bot.clock().isoformat()})
    return answer


def _ephemeral(text: str) -> JSONResponse:
    """An answer only the person who typed the slash command sees, written as Slack renders it
    (mrkdwn in Block Kit, as the bot's chat messages are) and with hints typed as in Slack."""
    from integrations.slack_blocks import render

    fallback, blocks = render(messages.as_typed_in_chat(text))
    return JSONResponse({"response_type": "ephemeral", "text": fallback, "blocks": blocks})


def _accept(bot: BotApp, fact, delivery: str, wake: Callable[[], None]) -> JSONResponse:
    if delivery and bot.store.get_state("deliveries", f"github:{delivery}"):
        return JSONResponse({"status": "duplicate", "delivery": delivery}, status_code=200)
    if fact.kind == "ping":
        answer = JSONResponse({"status": "pong"}, status_code=200)
    elif fact.kind == "ignored":
        answer = JSONResponse({"status": "ignored", "reason": fact.ignored}, status_code=202)
    elif fact.kind == "check_click":  # a button or Re-run on a check run: a command from whoever clicked
        new, what = bot.router.check_clicked(fact.click, delivery=delivery)
        status = "accepted" if new else ("ignored" if what.startswith("ignored") else "seen before")
        answer = JSONResponse({"status": status, "click": what}, status_code=202)
        if new:
            wake()
    elif fact.kind == "card_edited":  # a card moved on the project: who moved it, kept with the card
        new, what = bot.router.card_edited(fact.card, delivery=delivery)
        answer = JSONResponse({"status": "accepted" if new else ("ignored" if what.startswith("ignored") else
                                                                 "seen before"), "card": what}, status_code=202)
    elif fact.kind == "ticket_edited":  # each box ticked in the bot's checklist acts once, as its editor
        new = bot.router.ticket_body_edited(fact.ticket, fact.body, editor=fact.by, source="github")
        answer = JSONResponse({"status": "accepted" if new else "seen before"}, status_code=202)
        if new:
            wake()
    else:
        event = {
            "comment": lambda: CommandGiven("github", fact.comment),
            "merged": lambda: ChangeMerged("github", fact.change),
            "ticket_closed": lambda: TicketClosed("github", fact.ticket, by=fact.by),
        }[fact.kind]()
        new = bot.router.handle(event, source="github")
        answer = JSONResponse({"status": "accepted" if new else "seen before", "event": event.key}, status_code=202)
        if new:
            wake()
    if delivery:
        bot.store.put_state("deliveries", f"github:{delivery}", {"at": bot.clock().isoformat()})
    return answer


async def _run_sync(call):
    # The store and the dispatcher are synchronous; keep them off the event loop.
    from starlette.concurrency import run_in_threadpool

    return await run_in_threadpool(call)


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)
