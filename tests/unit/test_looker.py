"""The Looker Studio report definition (looker/report.yaml) and its Linking API URL.

The URL is checked the way Looker Studio reads it: parsed back with urllib, every data source alias must carry the
BigQuery TABLE parameters pointing at its rpt_* table in the given project and dataset. The definition is checked
against the dbt models (names, documented columns, BigQuery partitioning); tests/integration/test_reports.py checks
the fields against the built tables.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest
import yaml

from flows.errors import ConfigError
from flows.ops.looker import (
    DEFINITION,
    LINKING_API_URL,
    Report,
    check_tables_are_models,
    link_target,
    linking_url,
    load_report,
)
from flows.paths import PROJECT_ROOT
from flows.settings import Settings

ROOT = PROJECT_ROOT
REPORTS_DIR = ROOT / "dbt" / "models" / "reports"
TEMPLATE = "1b2c3d4e-5f60-4a7b-8c9d-0e1f2a3b4c5d"
PROJECT = "acme-analytics-42"


def _settings(**env: Any) -> Settings:
    return Settings(_env_file=None, **env)  # type: ignore[call-arg]


@pytest.fixture(scope="module")
def report() -> Report:
    return load_report()


def _params(url: str) -> dict[str, str]:
    pairs = parse_qsl(urlsplit(url).query, keep_blank_values=True, strict_parsing=True)
    keys = [k for k, _ in pairs]
    assert len(keys) == len(set(keys)), "a parameter appears twice"
    return dict(pairs)


def test_the_url_points_every_data_source_at_its_table_in_the_project_and_dataset(report: Report) -> None:
    target = link_target(_settings(GCP_PROJECT_ID=PROJECT, BQ_DATASET_PREFIX="cc_"))
    url = linking_url(report, target, template_report_id=TEMPLATE)

    parts = urlsplit(url)
    assert (parts.scheme, parts.netloc, parts.path) == ("https", "lookerstudio.google.com", "/reporting/create")
    assert url.startswith(LINKING_API_URL + "?") and " " not in url and "+" not in url
    params = _params(url)
    assert params["c.reportId"] == TEMPLATE
    assert params["r.reportName"] == f"CoinCap market data ({PROJECT})"
    assert all(re.match(r"^(c|r)\.[A-Za-z]+$|^ds\.[a-z][a-z0-9_]*\.[A-Za-z]+$", k) for k in params), params

    aliases = {k.split(".")[1] for k in params if k.startswith("ds.")}
    assert aliases == {ds.alias for ds in report.data_sources}
    models = {p.stem for p in REPORTS_DIR.glob("rpt_*.sql")}
    for ds in report.data_sources:
        mine = {k.split(".", 2)[2]: v for k, v in params.items() if k.startswith(f"ds.{ds.alias}.")}
        assert mine["tableId"] == ds.table and ds.table in models
        assert mine["connector"] == "bigQuery" and mine["type"] == "TABLE"  # replaces the template's source whole
        assert (mine["projectId"], mine["datasetId"], mine["billingProjectId"]) == (PROJECT, "cc_marts", PROJECT)
        assert mine["datasourceName"] == ds.name
        assert mine["refreshFields"] == "false"  # the copy keeps the template's field types and aggregations
        assert mine.get("isPartitioned") == ("true" if ds.partitioned else None)
        assert set(mine) <= {"connector", "type", "projectId", "datasetId", "tableId", "billingProjectId",
                             "datasourceName", "refreshFields", "isPartitioned"}  # fmt: skip
    # every report mart is in the report, and the daily ones are read as partitioned tables
    assert {ds.table for ds in report.data_sources} == models
    assert sum(ds.partitioned for ds in report.data_sources) == 4


def test_flags_override_the_settings_and_the_billing_project_defaults_to_the_project(report: Report) -> None:
    settings = _settings(GCP_PROJECT_ID="from-settings-1", BQ_DATASET_PREFIX="coincap_")
    assert link_target(settings).dataset == "coincap_marts"
    target = link_target(settings, project="flag-project-1", dataset="other_marts", billing_project="payer-proj-1")
    params = _params(linking_url(report, target, template_report_id=TEMPLATE, report_name="Mine", explain=True))
    assert params["ds.pairs.projectId"] == "flag-project-1" and params["ds.pairs.datasetId"] == "other_marts"
    assert params["ds.pairs.billingProjectId"] == "payer-proj-1"
    assert params["r.reportName"] == "Mine" and params["c.explain"] == "true"
    # a domain-scoped project id is a project id too
    assert link_target(settings, project="example.com:my-project").project == "example.com:my-project"


def test_a_missing_project_is_one_line_saying_what_to_set() -> None:
    with pytest.raises(ConfigError) as caught:
        link_target(_settings())
    message = str(caught.value)
    assert "\n" not in message and caught.value.exit_code == 2
    assert "--project" in message and "GCP_PROJECT_ID" in message


@pytest.mark.parametrize("project", ["My Project", "123456789", "ab", "has_underscore", "-leading-hyphen", "end-"])
def test_a_project_name_or_number_is_not_taken_for_an_id(project: str) -> None:
    with pytest.raises(ConfigError, match="is not a Google Cloud project id"):
        link_target(_settings(), project=project)


def test_a_bad_dataset_is_refused() -> None:
    with pytest.raises(ConfigError, match="is not a BigQuery dataset name"):
        link_target(_settings(), project=PROJECT, dataset="marts; drop")


def test_the_template_id_comes_from_the_flag_the_definition_or_a_pasted_url(report: Report) -> None:
    target = link_target(_settings(), project=PROJECT)
    with pytest.raises(ConfigError, match="No Looker Studio template report id") as caught:
        linking_url(report, target)  # the shipped definition has no published template yet
    assert "\n" not in str(caught.value) and "looker/README.md" in str(caught.value)

    pasted = f"https://lookerstudio.google.com/reporting/{TEMPLATE}/page/p_abc123"
    assert _params(linking_url(report, target, template_report_id=pasted))["c.reportId"] == TEMPLATE
    with_template = Report(report.name, TEMPLATE, report.data_sources, report.pages)
    assert _params(linking_url(with_template, target))["c.reportId"] == TEMPLATE
    with pytest.raises(ConfigError, match="is not a Looker Studio report id"):
        linking_url(report, target, template_report_id="not an id!")


# ------------------------------------------------------------------------------------------------ the definition


def test_the_definition_has_the_four_pages_with_a_date_range_control_each(report: Report) -> None:
    assert [p.id for p in report.pages] == [
        "market_overview",
        "asset_detail",
        "exchanges_and_markets",
        "pipeline_health",
    ]
    for page in report.pages:
        ranges = [c.default for c in page.controls if c.type == "date_range"]
        assert ranges in (["last_30_days"], ["last_7_days"]), page.id  # bounded: what every chart may scan
    quality_charts = [c for p in report.pages for c in p.charts if c.data_source == "quality"]
    assert quality_charts and all(p.id == "pipeline_health" for p in report.pages if quality_charts[0] in p.charts)


def test_every_field_is_a_documented_column_of_its_model(report: Report) -> None:
    documented = {
        m["name"]: [c["name"] for c in m["columns"]]
        for path in sorted(REPORTS_DIR.glob("rpt_*.yml"))  # one yml beside each model
        for m in yaml.safe_load(path.read_text())["models"]
    }
    for ds in report.data_sources:
        assert [f.name for f in ds.fields] == documented[ds.table], ds.alias  # same columns, same order
        assert report.fields_used()[ds.alias] <= {f.name for f in ds.fields}


def test_partitioned_data_sources_are_the_models_partitioned_by_their_date_dimension(report: Report) -> None:
    # tests/integration/test_dbt_bigquery.py checks on the BigQuery target that REPORTS are partitioned by
    # report_date and REPORT_VIEWS are views, and that together they are every rpt_* model
    from tests.integration.test_dbt_bigquery import REPORT_VIEWS, REPORTS

    for ds in report.data_sources:
        assert ds.date_range_dimension == "report_date", ds.alias
        assert ds.partitioned == (ds.table in REPORTS) and (not ds.partitioned) == (ds.table in REPORT_VIEWS)


def _mutated(tmp_path: Path, change: Any) -> Path:
    raw = yaml.safe_load(DEFINITION.read_text())
    change(raw)
    path = tmp_path / "report.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def _chart(raw: dict[str, Any], chart_id: str) -> dict[str, Any]:
    return next(c for p in raw["pages"] for c in p["charts"] if c["id"] == chart_id)


BROKEN = {
    "duplicate alias": (lambda r: r["data_sources"][1].update(alias="overview"), "alias 'overview' appears twice"),
    "alias with a dash": (lambda r: r["data_sources"][0].update(alias="over-view"), "must be a lowercase letter"),
    "not a report mart": (lambda r: r["data_sources"][0].update(table="fct_asset_daily"), "not a report mart"),
    "unknown chart field": (
        lambda r: _chart(r, "top_assets")["metrics"].append("market_cap"),
        "metric 'market_cap' is not a field of data source 'overview'",
    ),
    "metric without aggregation": (
        lambda r: _chart(r, "top_assets")["metrics"].append("asset_name"),
        "metric 'asset_name' has no aggregation",
    ),
    "sum of text": (
        lambda r: r["data_sources"][0]["fields"][4].update(aggregation="sum"),
        "sum of a text field 'asset_name'",
    ),
    "no date range control": (
        lambda r: r["pages"][0].update(controls=[]),
        "page 'market_overview' needs exactly one date_range control",
    ),
    "date dimension not a date": (
        lambda r: r["data_sources"][0].update(date_range_dimension="asset_id"),
        "date_range_dimension 'asset_id' is not a date field",
    ),
    "unused data source": (
        lambda r: r["data_sources"].append({**r["data_sources"][0], "alias": "spare", "table": "rpt_spare"}),
        "data source 'spare' is used by no chart",
    ),
    "filter without values": (
        lambda r: _chart(r, "failing_checks_per_day")["filters"][0].pop("values"),
        "filter in on 'status' needs values",
    ),
    "unknown control field": (
        lambda r: r["pages"][1]["controls"][1].update(field="ticker"),
        "data source 'assets' has no field 'ticker'",
    ),
    "time series over text": (
        lambda r: _chart(r, "market_cap_over_time").update(dimensions=["asset_symbol"]),
        "a time series needs a date as its first dimension",
    ),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_a_broken_definition_is_one_line_naming_the_problem(tmp_path: Path, case: str) -> None:
    change, expected = BROKEN[case]
    with pytest.raises(ConfigError) as caught:
        load_report(_mutated(tmp_path, change))
    message = str(caught.value)
    assert expected in message and "\n" not in message, message
    assert message.startswith(str(tmp_path / "report.yaml"))


def test_a_data_source_on_a_table_without_a_model_is_refused(report: Report, tmp_path: Path) -> None:
    check_tables_are_models(report, REPORTS_DIR)  # the real ones pass
    (tmp_path / "rpt_asset_daily.sql").write_text("select 1")
    with pytest.raises(ConfigError, match="reads rpt_market_overview_daily, which is not a model"):
        check_tables_are_models(report, tmp_path)


# ------------------------------------------------------------------------------------------------ the command


def _cli(args: list[str], tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("GCP_", "BQ_", "PIPELINE_", "COINCAP_"))}
    return subprocess.run(
        [sys.executable, "-m", "flows.cli", "looker-url", *args],
        cwd=tmp_path,  # no .env of the developer's
        env={**clean, **env, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_command_prints_only_the_url_on_stdout(tmp_path: Path) -> None:
    done = _cli(["--template-report-id", TEMPLATE], tmp_path, GCP_PROJECT_ID=PROJECT, BQ_DATASET_PREFIX="cc_")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert len(lines) == 1 and lines[0].startswith(LINKING_API_URL + "?")
    assert _params(lines[0])["ds.overview.datasetId"] == "cc_marts"
    assert f"{PROJECT}.cc_marts.rpt_market_pairs_daily" in done.stderr

    missing = _cli(["--template-report-id", TEMPLATE], tmp_path)
    assert missing.returncode == 2 and missing.stdout == ""
    errors = [line for line in missing.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "GCP_PROJECT_ID" in errors[0], missing.stderr


def test_the_readme_describes_every_page_and_chart_of_the_definition(report: Report) -> None:
    readme = (ROOT / "looker" / "README.md").read_text()
    for page in report.pages:
        assert f"### {page.title}\n" in readme, page.id
        for chart in page.charts:
            assert f"| {chart.title} |" in readme, chart.id
    charts = sum(len(p.charts) for p in report.pages)
    drop_downs = sum(c.type == "drop_down" for p in report.pages for c in p.controls)
    # the cost estimate counts the queries a cold view of every page runs
    assert f"{charts} charts and {drop_downs} drop-downs" in readme
    assert f"{charts + drop_downs} × 10 MB" in readme
