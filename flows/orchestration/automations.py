"""Prefect automations as code: `deployments/automations.yaml` parsed into Prefect's own models and applied
through the Prefect client (`coincap-pipeline automations`), with the notification block they post to.

`load_automations` checks the file; `apply_automations` creates or updates each automation by name, deletes ones
the file no longer has, and saves the `coincap-alerts` block from PIPELINE_ALERT_WEBHOOK_URL.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from uuid import UUID

import httpx

from flows.errors import ConfigError, PipelineError
from flows.ops.alerts import SOURCE, one_line
from flows.paths import PROJECT_ROOT

if TYPE_CHECKING:
    from prefect.events.schemas.automations import AutomationCore

    from flows.settings import Settings

AUTOMATIONS_FILE = PROJECT_ROOT / "deployments" / "automations.yaml"
NOTIFICATION_BLOCK = "coincap-alerts"
MANAGED_TAG = "coincap-pipeline"  # automations carrying it are owned by the file: removed from it, deleted
_PLACEHOLDER_ID = UUID(int=0)


def _read_yaml(path: Path) -> list[dict[str, Any]]:
    import yaml

    if not path.exists():
        raise ConfigError(f"No automations file at {path}.", "Run from the repository root or pass --file.")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML ({str(exc).splitlines()[0]}).", "Fix the file.") from None
    items = data.get("automations") if isinstance(data, dict) else None
    if not isinstance(items, list) or not items or not all(isinstance(i, dict) for i in items):
        raise ConfigError(f"{path} has no `automations:` list.", "See deployments/automations.yaml for the format.")
    return items


def load_automations(path: Path = AUTOMATIONS_FILE, block_document_id: UUID | None = None) -> list[AutomationCore]:
    """The file's automations as Prefect's own `AutomationCore` models, the notification block filled in.

    An action's `block_document_id: coincap-alerts` names the block `apply_automations` makes; without an id
    (validation only) a placeholder stands in."""
    from prefect.events.schemas.automations import AutomationCore
    from pydantic import ValidationError

    models: list[AutomationCore] = []
    for index, raw in enumerate(_read_yaml(path)):
        item = copy.deepcopy(raw)
        name = item.get("name") or f"#{index + 1}"
        for key in ("actions", "actions_on_trigger", "actions_on_resolve"):
            for action in item.get(key) or []:
                if isinstance(action, dict) and action.get("block_document_id") == NOTIFICATION_BLOCK:
                    action["block_document_id"] = str(block_document_id or _PLACEHOLDER_ID)
        item["tags"] = sorted({*(item.get("tags") or []), MANAGED_TAG})
        try:
            model = AutomationCore.model_validate(item)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first.get("loc", ()))
            raise ConfigError(
                f"{path}: automation {name!r} is invalid at {where or 'top level'}: {first.get('msg')}.",
                "Fix the file (Prefect's automation schema: prefect.events.schemas.automations).",
            ) from None
        # Every field set, so an update (PUT, unset fields left out) replaces the whole automation; the server
        # refuses `owner_resource` on update, and ours are owned by no resource.
        full = model.model_dump(mode="json", exclude={"owner_resource"} if model.owner_resource is None else None)
        models.append(AutomationCore.model_validate(full))
    names = [m.name for m in models]
    if len(set(names)) != len(names):
        raise ConfigError(f"{path} names an automation twice.", "Give every automation its own name.")
    return models


def is_slack_url(url: str) -> bool:
    from urllib.parse import urlsplit

    return (urlsplit(url).hostname or "").lower() in ("hooks.slack.com", "hooks.slack-gov.com")


def save_notification_block(url: str, name: str = NOTIFICATION_BLOCK) -> UUID:
    """Create or update the Prefect notification block automations post to; return its document id.

    A Slack URL becomes a `slack-webhook` block; any other Slack-compatible endpoint a `custom-webhook` block
    posting `{"text": ...}`, with the URL kept in the block's secrets."""
    from prefect.blocks.notifications import CustomWebhookNotificationBlock, SlackWebhook

    if is_slack_url(url):
        block: Any = SlackWebhook(url=url)
    else:
        block = CustomWebhookNotificationBlock(
            name=SOURCE,
            url="{{webhook_url}}",
            json_data={"text": "*{{subject}}*\n{{body}}"},
            secrets={"webhook_url": url},
        )
    return block.save(name, overwrite=True)


def _existing_block_id(name: str) -> UUID | None:
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    with get_client(sync_client=True) as client:
        for slug in ("slack-webhook", "custom-webhook"):
            try:
                return client.read_block_document_by_name(name, block_type_slug=slug).id
            except ObjectNotFound:
                continue
    return None


def _canonical(value: Any) -> Any:
    """JSON shape with sets' order ignored, for comparing an automation with its stored version."""
    if isinstance(value, dict):
        return {k: _canonical(v) for k, v in value.items()}
    if isinstance(value, list):
        items = [_canonical(v) for v in value]
        return sorted(items, key=lambda v: json.dumps(v, sort_keys=True, default=str))
    return value


def _same(stored: Any, wanted: AutomationCore) -> bool:
    keep = set(type(wanted).model_fields)
    a = _canonical({k: v for k, v in stored.model_dump(mode="json").items() if k in keep})
    b = _canonical(wanted.model_dump(mode="json"))
    return a == b


@dataclass
class AppliedAutomation:
    name: str
    action: str  # created | updated | unchanged | deleted
    id: UUID


def apply_automations(settings: Settings, path: Path = AUTOMATIONS_FILE) -> list[AppliedAutomation]:
    """Create or update the file's automations by name, and delete ones we made that the file no longer has.

    Idempotent: a second run reports every automation `unchanged` and writes nothing (an update would restart
    a proactive trigger's window)."""
    from prefect.client.orchestration import get_client
    from prefect.exceptions import PrefectHTTPStatusError
    from prefect.settings import PREFECT_API_URL

    if not PREFECT_API_URL.value():
        raise ConfigError(
            "PREFECT_API_URL is not set, so automations would go to a throwaway local server.",
            "Point it at your server or workspace (`prefect cloud login`, or export "
            "PREFECT_API_URL=http://127.0.0.1:4200/api), or run without --apply to only check the file.",
        )
    load_automations(path)  # check the file before touching anything
    url = settings.alert_webhook_url_value
    try:
        block_id = save_notification_block(url) if url else _existing_block_id(NOTIFICATION_BLOCK)
        if block_id is None:
            raise ConfigError(
                f"PIPELINE_ALERT_WEBHOOK_URL is not set and Prefect has no block named {NOTIFICATION_BLOCK}.",
                "Set PIPELINE_ALERT_WEBHOOK_URL to your Slack-compatible webhook, then re-run.",
            )
        wanted = load_automations(path, block_id)
        applied: list[AppliedAutomation] = []
        with get_client(sync_client=True) as client:
            for automation in wanted:
                found = client.read_automations_by_name(automation.name)
                if not found:
                    applied.append(AppliedAutomation(automation.name, "created", client.create_automation(automation)))
                    continue
                keep, *duplicates = found
                for extra in duplicates:
                    client.delete_automation(extra.id)
                if _same(keep, automation):
                    applied.append(AppliedAutomation(automation.name, "unchanged", keep.id))
                else:
                    client.update_automation(keep.id, automation)
                    applied.append(AppliedAutomation(automation.name, "updated", keep.id))
            names = {a.name for a in wanted}
            for stale in client.read_automations():
                if MANAGED_TAG in (stale.tags or []) and stale.name not in names:
                    client.delete_automation(stale.id)
                    applied.append(AppliedAutomation(stale.name, "deleted", stale.id))
    except PrefectHTTPStatusError as exc:
        detail = exc.response.text[:300] if exc.response is not None else str(exc)
        raise PipelineError(
            f"Prefect refused the automations (HTTP {exc.response.status_code}: {one_line(detail, 300)}).",
            f"Fix {path.name} and re-run.",
        ) from None
    except httpx.TransportError as exc:
        raise PipelineError(
            f"Cannot reach the Prefect API at {PREFECT_API_URL.value()} ({type(exc).__name__}).",
            "Start the server or check PREFECT_API_URL, then re-run.",
        ) from None
    return applied
