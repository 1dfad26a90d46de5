"""The Looker Studio report: its definition (`looker/report.yaml`) and the Linking API URL that copies it onto a
project's BigQuery report marts.

Looker Studio has no API that creates a report from a file. The report is built once, by hand, from the definition
(looker/README.md) and shared as a template; the Linking API URL
(https://developers.google.com/looker-studio/integrate/linking-api) then creates a copy of that template whose data
sources are replaced by the rpt_* tables of any project and dataset: `ds.<alias>.connector=bigQuery` with
`type=TABLE`, `projectId`, `datasetId`, `tableId`, `billingProjectId`, plus `isPartitioned=true` on the
day-partitioned tables (the partition column becomes the date range dimension, so every chart's query prunes
partitions) and `refreshFields=false` (the copy keeps the template's field types, aggregations and labels).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

from flows.errors import ConfigError
from flows.paths import PROJECT_ROOT
from flows.settings import Settings

LINKING_API_URL = "https://lookerstudio.google.com/reporting/create"
DEFINITION = PROJECT_ROOT / "looker" / "report.yaml"

FIELD_TYPES = frozenset({"text", "number", "currency_usd", "date", "datetime", "boolean"})
AGGREGATIONS = frozenset({"none", "sum", "avg", "min", "max", "count", "count_distinct"})
CHART_TYPES = frozenset({"scorecard", "table", "time_series", "column", "bar", "pie"})
DATE_RANGES = frozenset({"yesterday", "last_7_days", "last_28_days", "last_30_days", "last_90_days"})
FILTER_OPS = frozenset({"equals", "not_equals", "in", "less_or_equal", "greater_or_equal", "greater_than"})
FORMATTING_STYLES = frozenset({"red_green", "status"})
# Charts whose first dimension is the time axis.
TIME_CHARTS = frozenset({"time_series"})

# Looker Studio shows a data source's alias in Resource > Manage added data sources; the defaults are ds0, ds1, ...
# and they can be renamed. Kept to what is safe in a URL parameter name without encoding.
_ALIAS = re.compile(r"^[a-z][a-z0-9_]{0,31}$")
_REPORT_TABLE = re.compile(r"^rpt_[a-z0-9_]+$")
_COLUMN = re.compile(r"^[a-z_][a-z0-9_]*$")
# Google Cloud project ids: 6-30 lowercase letters, digits and hyphens, starting with a letter, not ending in a
# hyphen; older domain-scoped projects look like example.com:my-project.
_PROJECT = re.compile(r"^(?:[a-z][a-z0-9.-]*[a-z0-9]:)?[a-z][a-z0-9-]{4,28}[a-z0-9]$")
_DATASET = re.compile(r"^[A-Za-z0-9_]{1,1024}$")
# A report id as it appears in the report's URL (.../reporting/<id>/page/...): a UUID for current reports.
_REPORT_ID = re.compile(r"^[A-Za-z0-9_-]{8,128}$")
_REPORT_URL = re.compile(r"/reporting/([A-Za-z0-9_-]+)")


@dataclass(frozen=True)
class Field:
    """A field of a data source: a column of its table, with the type, default aggregation and label Looker shows."""

    name: str
    type: str
    aggregation: str
    label: str

    @property
    def is_metric(self) -> bool:
        return self.aggregation != "none"


@dataclass(frozen=True)
class DataSource:
    """A report data source: one rpt_* table, referenced in Linking API URLs by its alias."""

    alias: str
    table: str
    name: str
    date_range_dimension: str
    partitioned: bool
    refresh_fields: bool
    fields: tuple[Field, ...]

    def field(self, name: str) -> Field | None:
        return next((f for f in self.fields if f.name == name), None)


@dataclass(frozen=True)
class Metric:
    field: str
    aggregation: str | None  # None: the field's default aggregation


@dataclass(frozen=True)
class Chart:
    id: str
    type: str
    title: str
    data_source: str
    dimensions: tuple[str, ...]
    breakdown: str | None
    metrics: tuple[Metric, ...]
    sort: tuple[tuple[str, str], ...]  # (field, asc|desc)
    filters: tuple[dict[str, Any], ...]
    rows: int | None

    def fields(self) -> set[str]:
        """Every field the chart reads."""
        used = {*self.dimensions, *(m.field for m in self.metrics), *(f for f, _ in self.sort)}
        used.update(f["field"] for f in self.filters)
        if self.breakdown:
            used.add(self.breakdown)
        return used


@dataclass(frozen=True)
class Control:
    type: str  # date_range | drop_down
    default: str | None
    data_source: str | None = None
    field: str | None = None


@dataclass(frozen=True)
class Page:
    id: str
    title: str
    controls: tuple[Control, ...]
    charts: tuple[Chart, ...]


@dataclass(frozen=True)
class Report:
    """The report definition, validated: every reference resolves, every page has a date range control."""

    name: str
    template_report_id: str | None
    data_sources: tuple[DataSource, ...]
    pages: tuple[Page, ...]

    def data_source(self, alias: str) -> DataSource:
        return next(ds for ds in self.data_sources if ds.alias == alias)

    def fields_used(self) -> dict[str, set[str]]:
        """alias -> the fields the pages read (charts, controls, the date range dimension)."""
        used: dict[str, set[str]] = {ds.alias: {ds.date_range_dimension} for ds in self.data_sources}
        for page in self.pages:
            for chart in page.charts:
                used[chart.data_source] |= chart.fields()
            for control in page.controls:
                if control.data_source and control.field:
                    used[control.data_source].add(control.field)
        return used


@dataclass(frozen=True)
class LinkTarget:
    """Where the copied report's data sources point."""

    project: str
    dataset: str
    billing_project: str


# ------------------------------------------------------------------------------------------------ definition


class _Invalid(Exception):
    """A problem in the definition; `load_report` turns it into a one-line ConfigError."""


def load_report(path: Path = DEFINITION) -> Report:
    """Read and validate the report definition; a problem becomes one ConfigError line naming where it is."""
    import yaml

    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(
            f"No Looker Studio report definition at {path}.", "Pass --definition with the path to report.yaml."
        ) from None
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        line = f" (line {where.line + 1})" if where else ""
        raise ConfigError(f"{path} is not valid YAML{line}.", "Fix the file and run the command again.") from None
    try:
        return _parse_report(raw)
    except _Invalid as exc:
        raise ConfigError(f"{path}: {exc}.", "Fix the report definition and run the command again.") from None


def _parse_report(raw: Any) -> Report:
    root = _mapping(raw, "the file")
    report = _mapping(root.get("report"), "report")
    name = _text(report.get("name"), "report.name")
    template = report.get("template_report_id") or None
    if template is not None:
        template = _report_id(str(template), "report.template_report_id")

    sources_raw = root.get("data_sources")
    if not isinstance(sources_raw, list) or not sources_raw:
        raise _Invalid("data_sources must be a non-empty list")
    sources = tuple(_parse_data_source(item, f"data_sources[{i}]") for i, item in enumerate(sources_raw))
    _unique([ds.alias for ds in sources], "data source alias")
    _unique([ds.table for ds in sources], "data source table")
    by_alias = {ds.alias: ds for ds in sources}

    pages_raw = root.get("pages")
    if not isinstance(pages_raw, list) or not pages_raw:
        raise _Invalid("pages must be a non-empty list")
    pages = tuple(_parse_page(item, f"pages[{i}]", by_alias) for i, item in enumerate(pages_raw))
    _unique([p.id for p in pages], "page id")
    _unique([c.id for p in pages for c in p.charts], "chart id")

    used = {c.data_source for p in pages for c in p.charts}
    unused = [ds.alias for ds in sources if ds.alias not in used]
    if unused:
        raise _Invalid(f"data source {unused[0]!r} is used by no chart (remove it or add a chart)")
    return Report(name=name, template_report_id=template, data_sources=sources, pages=pages)


def _parse_data_source(raw: Any, where: str) -> DataSource:
    item = _mapping(raw, where)
    alias = _text(item.get("alias"), f"{where}.alias")
    if not _ALIAS.match(alias):
        raise _Invalid(f"{where}.alias {alias!r} must be a lowercase letter then letters, digits or _ (max 32)")
    table = _text(item.get("table"), f"{where}.table")
    if not _REPORT_TABLE.match(table):
        raise _Invalid(f"{where}.table {table!r} is not a report mart (rpt_*): dashboards read only those")
    fields_raw = item.get("fields")
    if not isinstance(fields_raw, list) or not fields_raw:
        raise _Invalid(f"{where}.fields must be a non-empty list")
    fields = tuple(_parse_field(f, f"{where}.fields[{i}]") for i, f in enumerate(fields_raw))
    _unique([f.name for f in fields], f"field name in {where}")
    source = DataSource(
        alias=alias,
        table=table,
        name=_text(item.get("name"), f"{where}.name"),
        date_range_dimension=_text(item.get("date_range_dimension"), f"{where}.date_range_dimension"),
        partitioned=_boolean(item.get("partitioned", False), f"{where}.partitioned"),
        refresh_fields=_boolean(item.get("refresh_fields", False), f"{where}.refresh_fields"),
        fields=fields,
    )
    # Every data source needs a date dimension: the pages' date range controls filter on it, which bounds (and, on a
    # partitioned table, prunes) what each chart reads.
    date_field = source.field(source.date_range_dimension)
    if date_field is None or date_field.type != "date":
        raise _Invalid(f"{where}.date_range_dimension {source.date_range_dimension!r} is not a date field of {alias}")
    return source


def _parse_field(raw: Any, where: str) -> Field:
    item = _mapping(raw, where)
    name = _text(item.get("name"), f"{where}.name")
    if not _COLUMN.match(name):
        raise _Invalid(f"{where}.name {name!r} is not a column name")
    kind = _choice(item.get("type"), FIELD_TYPES, f"{where}.type")
    aggregation = _choice(item.get("aggregation", "none"), AGGREGATIONS, f"{where}.aggregation")
    if aggregation in {"sum", "avg"} and kind not in {"number", "currency_usd"}:
        raise _Invalid(f"{where}: {aggregation} of a {kind} field {name!r}")
    return Field(name=name, type=kind, aggregation=aggregation, label=_text(item.get("label"), f"{where}.label"))


def _parse_page(raw: Any, where: str, sources: dict[str, DataSource]) -> Page:
    item = _mapping(raw, where)
    page_id = _text(item.get("id"), f"{where}.id")
    controls_raw = item.get("controls") or []
    controls = tuple(_parse_control(c, f"{where}.controls[{i}]", sources) for i, c in enumerate(controls_raw))
    ranges = [c for c in controls if c.type == "date_range"]
    if len(ranges) != 1:
        raise _Invalid(f"page {page_id!r} needs exactly one date_range control (it bounds what every chart reads)")
    charts_raw = item.get("charts")
    if not isinstance(charts_raw, list) or not charts_raw:
        raise _Invalid(f"page {page_id!r} has no charts")
    charts = tuple(_parse_chart(c, f"page {page_id!r} charts[{i}]", sources) for i, c in enumerate(charts_raw))
    return Page(id=page_id, title=_text(item.get("title"), f"{where}.title"), controls=controls, charts=charts)


def _parse_control(raw: Any, where: str, sources: dict[str, DataSource]) -> Control:
    item = _mapping(raw, where)
    kind = _choice(item.get("type"), {"date_range", "drop_down"}, f"{where}.type")
    if kind == "date_range":
        return Control(type=kind, default=_choice(item.get("default"), DATE_RANGES, f"{where}.default"))
    alias = _choice(item.get("data_source"), set(sources), f"{where}.data_source")
    field = _text(item.get("field"), f"{where}.field")
    if sources[alias].field(field) is None:
        raise _Invalid(f"{where}: data source {alias!r} has no field {field!r}")
    default = item.get("default")
    return Control(type=kind, default=None if default is None else str(default), data_source=alias, field=field)


def _parse_chart(raw: Any, where: str, sources: dict[str, DataSource]) -> Chart:
    item = _mapping(raw, where)
    chart_id = _text(item.get("id"), f"{where}.id")
    where = f"chart {chart_id!r}"
    kind = _choice(item.get("type"), CHART_TYPES, f"{where} type")
    alias = _choice(item.get("data_source"), set(sources), f"{where} data_source")
    source = sources[alias]

    def known(name: Any, role: str) -> str:
        name = _text(name, f"{where} {role}")
        if source.field(name) is None:
            raise _Invalid(f"{where}: {role} {name!r} is not a field of data source {alias!r} ({source.table})")
        return name

    dimensions = tuple(known(d, "dimension") for d in item.get("dimensions") or [])
    metrics = []
    for m in item.get("metrics") or []:
        spec = m if isinstance(m, dict) else {"field": m}
        name = known(spec.get("field"), "metric")
        aggregation = spec.get("aggregation")
        if aggregation is not None:
            aggregation = _choice(aggregation, AGGREGATIONS - {"none"}, f"{where} metric {name!r} aggregation")
        elif not source.field(name).is_metric:  # type: ignore[union-attr]
            raise _Invalid(f"{where}: metric {name!r} has no aggregation (give the field one, or the metric)")
        metrics.append(Metric(field=name, aggregation=aggregation))
    if not metrics:
        raise _Invalid(f"{where} has no metrics")
    if kind == "scorecard" and dimensions:
        raise _Invalid(f"{where}: a scorecard has no dimensions")
    if kind != "scorecard" and not dimensions:
        raise _Invalid(f"{where}: a {kind} chart needs a dimension")
    if kind in TIME_CHARTS and source.field(dimensions[0]).type not in {"date", "datetime"}:  # type: ignore[union-attr]
        raise _Invalid(f"{where}: a time series needs a date as its first dimension, not {dimensions[0]!r}")
    breakdown = item.get("breakdown")
    if breakdown is not None:
        breakdown = known(breakdown, "breakdown")

    sort = []
    for s in item.get("sort") or []:
        spec = _mapping(s, f"{where} sort")
        order = _choice(spec.get("order", "desc"), {"asc", "desc"}, f"{where} sort order")
        sort.append((known(spec.get("field"), "sort field"), order))
    filters = []
    for f in item.get("filters") or []:
        spec = _mapping(f, f"{where} filter")
        known(spec.get("field"), "filter field")
        op = _choice(spec.get("op"), FILTER_OPS, f"{where} filter op")
        if ("values" if op == "in" else "value") not in spec:
            raise _Invalid(f"{where}: filter {op} on {spec['field']!r} needs {'values' if op == 'in' else 'a value'}")
        filters.append(dict(spec))
    for rule in item.get("conditional_formatting") or []:
        spec = _mapping(rule, f"{where} conditional_formatting")
        known(spec.get("field"), "formatted field")
        _choice(spec.get("style"), FORMATTING_STYLES, f"{where} conditional_formatting style")
    rows = item.get("rows")
    if rows is not None and (not isinstance(rows, int) or isinstance(rows, bool) or rows < 1):
        raise _Invalid(f"{where}: rows must be a positive whole number")
    return Chart(
        id=chart_id,
        type=kind,
        title=_text(item.get("title"), f"{where} title"),
        data_source=alias,
        dimensions=dimensions,
        breakdown=breakdown,
        metrics=tuple(metrics),
        sort=tuple(sort),
        filters=tuple(filters),
        rows=rows,
    )


def _mapping(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _Invalid(f"{where} must be a mapping")
    return value


def _text(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise _Invalid(f"{where} is missing (a non-empty string)")
    return value.strip()


def _boolean(value: Any, where: str) -> bool:
    if not isinstance(value, bool):
        raise _Invalid(f"{where} must be true or false")
    return value


def _choice(value: Any, allowed: set[str] | frozenset[str], where: str) -> str:
    if value not in allowed:
        raise _Invalid(f"{where} is {value!r}; one of {', '.join(sorted(allowed))}")
    return str(value)


def _unique(values: list[str], what: str) -> None:
    seen: set[str] = set()
    for value in values:
        if value in seen:
            raise _Invalid(f"{what} {value!r} appears twice")
        seen.add(value)


def _report_id(text: str, where: str) -> str:
    """A report id, or the id inside a pasted report URL (https://lookerstudio.google.com/reporting/<id>/page/...)."""
    text = text.strip()
    found = _REPORT_URL.search(text) if "/" in text else None
    candidate = found.group(1) if found else text
    if not _REPORT_ID.match(candidate):
        raise ConfigError(
            f"{where} {text!r} is not a Looker Studio report id.",
            "Use the part of the template report's URL between /reporting/ and /page.",
        )
    return candidate


# ------------------------------------------------------------------------------------------------ the URL


def link_target(
    settings: Settings, *, project: str | None = None, dataset: str | None = None, billing_project: str | None = None
) -> LinkTarget:
    """The project and dataset of the marts, from the flags or else the settings (GCP_PROJECT_ID, BQ_DATASET_PREFIX)."""
    project = (project or settings.gcp_project or "").strip()
    if not project:
        raise ConfigError(
            "No Google Cloud project for the report's data sources.",
            "Pass --project or set GCP_PROJECT_ID (terraform output pipeline_env exports it).",
        )
    if not _PROJECT.match(project):
        raise ConfigError(
            f"{project!r} is not a Google Cloud project id.",
            "Use the project id (6-30 lowercase letters, digits and hyphens), not its name or number.",
        )
    dataset = (dataset or settings.bq_dataset("marts")).strip()
    if not _DATASET.match(dataset):
        raise ConfigError(
            f"{dataset!r} is not a BigQuery dataset name.", "Use letters, digits and underscores only (--dataset)."
        )
    billing = (billing_project or project).strip()
    if not _PROJECT.match(billing):
        raise ConfigError(f"{billing!r} is not a Google Cloud project id.", "Fix --billing-project.")
    return LinkTarget(project=project, dataset=dataset, billing_project=billing)


def linking_url(
    report: Report,
    target: LinkTarget,
    *,
    template_report_id: str | None = None,
    report_name: str | None = None,
    explain: bool = False,
) -> str:
    """The Linking API URL that copies the template report with every data source on `target`'s rpt_* tables."""
    template = template_report_id or report.template_report_id
    if not template:
        raise ConfigError(
            "No Looker Studio template report id.",
            "Create the template once (looker/README.md, 'Create the template'), then pass --template-report-id or "
            "set report.template_report_id in looker/report.yaml.",
        )
    params: list[tuple[str, str]] = [
        ("c.reportId", _report_id(template, "The template report id")),
        ("r.reportName", report_name or f"{report.name} ({target.project})"),
    ]
    if explain:
        params.append(("c.explain", "true"))  # Looker Studio's debug dialog: how it read each parameter
    for ds in report.data_sources:
        prefix = f"ds.{ds.alias}."
        # connector set: the template's data source configuration is replaced whole, so nothing of the template's
        # project leaks into the copy (and every required BigQuery parameter is given).
        params += [
            (prefix + "connector", "bigQuery"),
            (prefix + "type", "TABLE"),
            (prefix + "projectId", target.project),
            (prefix + "datasetId", target.dataset),
            (prefix + "tableId", ds.table),
            (prefix + "billingProjectId", target.billing_project),
            (prefix + "datasourceName", ds.name),
            (prefix + "refreshFields", "true" if ds.refresh_fields else "false"),
        ]
        if ds.partitioned:
            params.append((prefix + "isPartitioned", "true"))
    return f"{LINKING_API_URL}?{urlencode(params, quote_via=quote, safe='')}"


def check_tables_are_models(report: Report, models_dir: Path) -> None:
    """Every data source reads a dbt model of the reports folder (when the dbt project is at hand)."""
    if not models_dir.is_dir():
        return
    models = {p.stem for p in models_dir.glob("rpt_*.sql")}
    for ds in report.data_sources:
        if ds.table not in models:
            raise ConfigError(
                f"Data source {ds.alias!r} reads {ds.table}, which is not a model in {models_dir}.",
                "Point it at an rpt_* model in looker/report.yaml.",
            )


# ------------------------------------------------------------------------------------------------ queries

_AGGREGATE_SQL = {"sum": "sum({})", "avg": "avg({})", "min": "min({})", "max": "max({})", "count": "count({})",
                  "count_distinct": "count(distinct {})"}  # fmt: skip
_FILTER_SQL = {"equals": "=", "not_equals": "!=", "less_or_equal": "<=", "greater_or_equal": ">=", "greater_than": ">"}
_RANGE_DAYS = {"yesterday": 1, "last_7_days": 7, "last_28_days": 28, "last_30_days": 30, "last_90_days": 90}


def _literal(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    return "'" + str(value).replace("\\", "\\\\").replace("'", "\\'") + "'"


def report_queries(report: Report, project: str, dataset: str) -> dict[str, str]:
    """The BigQuery SQL the report's charts and drop-down controls issue, shaped as Looker Studio sends it:
    the date range on the data source's date dimension (the partition column), the chart's filters, its
    dimensions and breakdown grouped, its metrics aggregated, sorted and limited. Keyed `<page>.<chart>`."""
    queries: dict[str, str] = {}
    for page in report.pages:
        days = next((_RANGE_DAYS[c.default] for c in page.controls if c.type == "date_range" and c.default), 30)
        for chart in page.charts:
            source = report.data_source(chart.data_source)
            table = f"`{project}`.`{dataset}`.`{source.table}`"
            groups = [*chart.dimensions, *([chart.breakdown] if chart.breakdown else [])]
            metrics = []
            for metric in chart.metrics:
                aggregation = metric.aggregation or source.field(metric.field).aggregation  # type: ignore[union-attr]
                metrics.append(f"{_AGGREGATE_SQL[aggregation].format(metric.field)} as {metric.field}")
            where = [_date_range(source.date_range_dimension, days)]
            for f in chart.filters:
                if f["op"] == "in":
                    where.append(f"{f['field']} in ({', '.join(_literal(v) for v in f['values'])})")
                else:
                    where.append(f"{f['field']} {_FILTER_SQL[f['op']]} {_literal(f['value'])}")
            sql = f"select {', '.join([*groups, *metrics])} from {table} where {' and '.join(where)}"
            if groups:
                sql += f" group by {', '.join(groups)}"
            if chart.sort:
                sql += f" order by {', '.join(f'{field} {order}' for field, order in chart.sort)}"
            if chart.rows:
                sql += f" limit {chart.rows}"
            queries[f"{page.id}.{chart.id}"] = sql
        for control in page.controls:
            if control.type == "drop_down" and control.data_source and control.field:
                source = report.data_source(control.data_source)
                queries[f"{page.id}.control_{control.field}"] = (
                    f"select distinct {control.field} from `{project}`.`{dataset}`.`{source.table}`"
                    f" where {_date_range(source.date_range_dimension, days)} order by {control.field}"
                )
    return queries


def _date_range(column: str, days: int) -> str:
    return f"{column} between date_sub(current_date(), interval {days} day) and current_date()"
