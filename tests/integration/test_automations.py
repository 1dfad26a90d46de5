"""Prefect automations as code (deployments/automations.yaml), against a real Prefect server on 127.0.0.1.

The file parses into Prefect's own models and says what the schedules imply (the overdue window covers the
snapshot's cron interval). Applying it twice leaves exactly three automations and one notification block;
editing the file updates or deletes by name. The server really fires them: a failed `coincap` flow run and
the pipeline's data-quality event each reach the local webhook through Prefect's notification block.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from uuid import UUID

import pytest
import yaml

from flows.errors import ConfigError
from flows.ops.alerts import quality_alert
from flows.orchestration.alerting import QUALITY_FAILED_EVENT, send_alert
from flows.orchestration.automations import (
    AUTOMATIONS_FILE,
    MANAGED_TAG,
    NOTIFICATION_BLOCK,
    apply_automations,
    load_automations,
    save_notification_block,
)
from flows.paths import PROJECT_ROOT
from tests.conftest import fast_settings
from tests.integration.test_alerts import Webhook, bad_report

ROOT = PROJECT_ROOT
NAMES = {"coincap-flow-run-failed", "coincap-snapshot-overdue", "coincap-data-quality-failed"}


def _by_name(path: Path = AUTOMATIONS_FILE) -> dict:
    return {m.name: m for m in load_automations(path)}


def _max_gap(cron: str) -> timedelta:
    from cronsim import CronSim

    start = datetime(2027, 1, 1, tzinfo=UTC)
    fires = []
    for moment in CronSim(cron, start):
        if moment > start + timedelta(days=366):
            break
        fires.append(moment)
    return max(b - a for a, b in zip(fires, fires[1:], strict=False))


def test_the_file_is_three_automations_in_prefect_s_own_models() -> None:
    from prefect.events.actions import SendNotification
    from prefect.events.schemas.automations import AutomationCore, EventTrigger, Posture

    models = _by_name()
    assert set(models) == NAMES
    for model in models.values():
        assert isinstance(model, AutomationCore) and isinstance(model.trigger, EventTrigger)
        assert model.enabled and MANAGED_TAG in model.tags and model.description
        (action,) = model.actions
        assert isinstance(action, SendNotification) and action.block_document_id == UUID(int=0)  # placeholder
        assert action.subject and action.body

    failed = models["coincap-flow-run-failed"].trigger
    assert failed.posture == Posture.Reactive and failed.threshold == 1
    assert failed.expect == {"prefect.flow-run.Failed", "prefect.flow-run.Crashed", "prefect.flow-run.TimedOut"}
    assert failed.match_related.model_dump() == {
        "prefect.resource.role": "tag",
        "prefect.resource.id": "prefect.tag.coincap",
    }
    # ... which is every deployment we ship.
    for path in (ROOT / "prefect.yaml", ROOT / "deployments" / "local.prefect.yaml"):
        for spec in yaml.safe_load(path.read_text())["deployments"]:
            assert "coincap" in spec["tags"], f"{spec['name']} in {path.name} would not be watched"

    overdue = models["coincap-snapshot-overdue"].trigger
    assert overdue.posture == Posture.Proactive and overdue.expect == {"prefect.flow-run.Completed"}
    related = {spec.model_dump()["prefect.resource.role"]: spec.model_dump() for spec in overdue.match_related}
    assert related["deployment"]["prefect.resource.name"] == "snapshot"
    gcp = {d["name"]: d for d in yaml.safe_load((ROOT / "prefect.yaml").read_text())["deployments"]}
    (schedule,) = gcp["snapshot"]["schedules"]
    gap = _max_gap(schedule["cron"])
    assert gap <= overdue.within <= gap + timedelta(hours=6), (gap, overdue.within)  # interval + some slack

    quality = models["coincap-data-quality-failed"].trigger
    assert quality.posture == Posture.Reactive and quality.expect == {QUALITY_FAILED_EVENT}
    from prefect.events.schemas.events import Resource

    emitted = Resource({"prefect.resource.id": "coincap.snapshot.20261121T053000Z", "prefect.resource.name": "x"})
    assert quality.match.matches(emitted)
    assert not quality.match.matches(Resource({"prefect.resource.id": "prefect.flow-run.123"}))


def test_a_bad_file_is_refused_in_one_line(tmp_path) -> None:
    data = yaml.safe_load(AUTOMATIONS_FILE.read_text())
    data["automations"][1]["trigger"]["within"] = "P7D"  # not seconds
    data["automations"][1]["trigger"]["posture"] = "Sometimes"
    bad = tmp_path / "automations.yaml"
    bad.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError, match="coincap-snapshot-overdue.*is invalid at trigger") as caught:
        load_automations(bad)
    assert "\n" not in str(caught.value)
    bad.write_text("automations: []\n")
    with pytest.raises(ConfigError, match="has no `automations:` list"):
        load_automations(bad)
    data = yaml.safe_load(AUTOMATIONS_FILE.read_text())
    data["automations"].append(data["automations"][0])
    bad.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError, match="names an automation twice"):
        load_automations(bad)
    with pytest.raises(ConfigError, match="No automations file"):
        load_automations(tmp_path / "missing.yaml")


def test_the_command_checks_and_prints_them(tmp_path) -> None:
    from typer.testing import CliRunner

    from flows.cli import app

    result = CliRunner().invoke(app, ["automations", "--file", str(AUTOMATIONS_FILE)], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    for name in NAMES:
        assert name in result.output
    flat = " ".join(result.output.replace("│", " ").split())
    assert "no prefect.flow-run.Completed within 7 days, 3:00:00" in flat
    assert "1 × coincap.data-quality.failed" in flat
    assert "3 automations valid" in result.output


def test_apply_needs_a_real_prefect_api(tmp_path) -> None:
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with (
        temporary_settings(restore_defaults={PREFECT_API_URL}),
        pytest.raises(ConfigError, match="PREFECT_API_URL is not set"),
    ):
        apply_automations(fast_settings(tmp_path, "http://127.0.0.1:1/v3"))


@pytest.fixture
def clean_prefect(prefect_api) -> Iterator[None]:
    """Leave the session's server without our automations and block, for the tests after these."""
    from prefect.client.orchestration import get_client

    yield
    with get_client(sync_client=True) as client:
        for automation in client.read_automations():
            if MANAGED_TAG in automation.tags:
                client.delete_automation(automation.id)
        for slug in ("custom-webhook", "slack-webhook"):
            try:
                doc = client.read_block_document_by_name(NOTIFICATION_BLOCK, block_type_slug=slug)
            except Exception:
                continue
            client.delete_block_document(doc.id)


def _ours(client) -> list:
    return [a for a in client.read_automations() if MANAGED_TAG in a.tags]


def test_apply_is_idempotent_and_the_server_fires_them(clean_prefect, tmp_path) -> None:
    from prefect import flow, tags
    from prefect.client.orchestration import get_client
    from prefect.events.actions import SendNotification
    from prefect.events.schemas.automations import EventTrigger
    from prefect.events.worker import EventsWorker

    with Webhook() as webhook:
        settings = fast_settings(tmp_path / "data", "http://127.0.0.1:1/v3", PIPELINE_ALERT_WEBHOOK_URL=webhook.url)
        first = apply_automations(settings)
        second = apply_automations(settings)
        assert sorted((a.name, a.action) for a in first) == sorted((n, "created") for n in NAMES)
        assert sorted((a.name, a.action) for a in second) == sorted((n, "unchanged") for n in NAMES)
        assert {a.id for a in first} == {a.id for a in second}

        with get_client(sync_client=True) as client:
            stored = _ours(client)
            assert {a.name for a in stored} == NAMES and len(stored) == 3
            block = client.read_block_document_by_name(NOTIFICATION_BLOCK, block_type_slug="custom-webhook")
            for automation in stored:
                assert isinstance(automation.trigger, EventTrigger)  # read back as Prefect's model
                (action,) = automation.actions
                assert isinstance(action, SendNotification) and action.block_document_id == block.id

        # The server fires them. A failed flow run tagged `coincap` (as every deployment of ours is) ...
        @flow(name="doomed")
        def doomed() -> None:
            raise RuntimeError("kaput")

        with tags("coincap"):
            assert doomed(return_state=True).is_failed()
        (post,) = webhook.wait_for(1, 30)
        assert post["text"].startswith("*coincap-pipeline: flow run ") and "of doomed is Failed*" in post["text"]
        assert "RuntimeError: kaput" in post["text"]

        # ... and the event the pipeline emits when data-quality checks fail. (No webhook in these settings:
        # the post can only come from Prefect's automation.)
        send_alert(quality_alert(bad_report()), fast_settings(tmp_path / "data", "http://127.0.0.1:1/v3"))
        EventsWorker.drain_all()
        posts = webhook.wait_for(2, 30)
        assert len(posts) == 2, posts
        text = posts[1]["text"]
        assert text.startswith("*coincap-pipeline: Data-quality checks failed for snapshot 20261121T053000Z")
        assert "Failing checks: validity.no_negative_prices, uniqueness.markets_natural_key" in text

    # Edit the file: a changed automation is updated in place, a removed one deleted.
    data = yaml.safe_load(AUTOMATIONS_FILE.read_text())
    data["automations"][0]["description"] = "Edited."
    del data["automations"][2]
    edited = tmp_path / "automations.yaml"
    edited.write_text(yaml.safe_dump(data))
    third = {a.name: a for a in apply_automations(settings, edited)}
    assert {n: a.action for n, a in third.items()} == {
        "coincap-flow-run-failed": "updated",
        "coincap-snapshot-overdue": "unchanged",
        "coincap-data-quality-failed": "deleted",
    }
    with get_client(sync_client=True) as client:
        stored = {a.name: a for a in _ours(client)}
        assert set(stored) == {"coincap-flow-run-failed", "coincap-snapshot-overdue"}
        assert stored["coincap-flow-run-failed"].description == "Edited."
        assert stored["coincap-flow-run-failed"].id == third["coincap-flow-run-failed"].id


def test_a_slack_url_makes_a_slack_webhook_block(clean_prefect, tmp_path) -> None:
    from prefect.blocks.notifications import SlackWebhook
    from prefect.client.orchestration import get_client

    url = "https://hooks.slack.com/services/T00000000/B00000000/XXXXXXXXXXXXXXXXXXXXXXXX"
    block_id = save_notification_block(url)
    assert save_notification_block(url) == block_id  # saved again in place
    with get_client(sync_client=True) as client:
        doc = client.read_block_document_by_name(NOTIFICATION_BLOCK, block_type_slug="slack-webhook")
    assert doc.id == block_id
    assert SlackWebhook.load(NOTIFICATION_BLOCK).url.get_secret_value() == url
    # Without PIPELINE_ALERT_WEBHOOK_URL, --apply uses the block that is already there.
    applied = apply_automations(fast_settings(tmp_path / "data", "http://127.0.0.1:1/v3"))
    assert {a.action for a in applied} == {"created"}
    with get_client(sync_client=True) as client:
        assert all(a.actions[0].block_document_id == block_id for a in _ours(client))


def test_apply_without_a_webhook_or_a_block_says_what_to_set(clean_prefect, tmp_path) -> None:
    copy = tmp_path / "automations.yaml"
    shutil.copy(AUTOMATIONS_FILE, copy)
    with pytest.raises(ConfigError, match="PIPELINE_ALERT_WEBHOOK_URL is not set and Prefect has no block"):
        apply_automations(fast_settings(tmp_path / "data", "http://127.0.0.1:1/v3"), copy)
