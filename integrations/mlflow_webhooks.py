"""MLflow's registry webhooks (MLflow 3.3+): checking a delivery's signature and reading what it tells.

The webhook route verifies each delivery with the shared secret (``verify_webhook``) and reads the
registry fact it tells (``webhook_event``); ``MlflowRegistry.ensure_webhook`` subscribes to
``WEBHOOK_EVENTS``. Nothing here imports MLflow or talks to a server.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Mapping
from typing import Any

__all__ = ["WEBHOOK_EVENTS", "WebhookError", "verify_webhook", "webhook_event"]

#: the registry events the bot's webhook subscribes to
WEBHOOK_EVENTS = ("model_version.created", "model_version_alias.created", "model_version_alias.deleted")


class WebhookError(Exception):
    """A webhook delivery that is not signed with the shared secret, is too old, or is not JSON."""


def verify_webhook(secret: str, headers: Mapping[str, str], body: bytes, *, now: float | None = None,
                   tolerance_s: float = 300.0) -> dict[str, Any]:
    """The payload of an MLflow registry webhook delivery, once its HMAC signature is checked.

    MLflow (3.3+) signs ``f"{X-MLflow-Delivery-Id}.{X-MLflow-Timestamp}.{raw body}"`` with
    HMAC-SHA256 and the webhook's secret, and sends ``X-MLflow-Signature: v1,<base64 digest>``.
    The timestamp is Unix seconds; a delivery further than ``tolerance_s`` from ``now`` is refused
    as a replay. Raises ``WebhookError`` with one line saying what was wrong.
    """
    if not secret:
        raise WebhookError("no webhook secret is set, so no delivery can be verified: set MLFLOW_WEBHOOK_SECRET "
                           "to the webhook's secret in MLflow")
    given = {k.lower(): v for k, v in headers.items()}
    delivery, stamp, signature = (given.get("x-mlflow-delivery-id"), given.get("x-mlflow-timestamp"),
                                  given.get("x-mlflow-signature"))
    missing = [name for name, value in (("X-MLflow-Delivery-Id", delivery), ("X-MLflow-Timestamp", stamp),
                                        ("X-MLflow-Signature", signature)) if not value]
    if missing:
        raise WebhookError(f"missing {', '.join(missing)}: not a signed MLflow webhook delivery "
                           "(give the webhook a secret in MLflow)")
    try:
        sent = int(stamp)
    except ValueError:
        raise WebhookError(f"X-MLflow-Timestamp {stamp!r} is not Unix seconds") from None
    age = (time.time() if now is None else now) - sent
    if abs(age) > tolerance_s:
        raise WebhookError(f"delivery {delivery} was signed {int(abs(age))} s from now (more than "
                           f"{int(tolerance_s)} s): refused as a replay; check the clocks of MLflow and the bot")
    signed = delivery.encode() + b"." + stamp.encode() + b"." + body
    expected = "v1," + base64.b64encode(hmac.new(secret.encode(), signed, hashlib.sha256).digest()).decode()
    # Standard Webhooks allows several space-separated signatures (during a key rotation); MLflow sends one.
    if not any(hmac.compare_digest(expected.encode(), offered.encode()) for offered in signature.split()):
        raise WebhookError(f"delivery {delivery}: signature does not match the shared secret "
                           "(MLFLOW_WEBHOOK_SECRET must be the webhook's secret in MLflow)")
    try:
        payload = json.loads(body)
    except ValueError as exc:
        raise WebhookError(f"delivery {delivery}: body is not JSON: {exc}") from None
    if not isinstance(payload, dict):
        raise WebhookError(f"delivery {delivery}: body is JSON but not an object")
    return payload


def webhook_event(payload: Mapping[str, Any]) -> dict[str, Any]:
    """The registry fact a verified payload tells: event, model, version, alias (None where not said)."""
    data = payload.get("data") or {}
    version = data.get("version")
    return {"event": f"{payload.get('entity')}.{payload.get('action')}", "model": data.get("name"),
            "version": int(version) if str(version or "").isdigit() else None, "alias": data.get("alias"),
            "tags": data.get("tags") or {}, "at": payload.get("timestamp")}
