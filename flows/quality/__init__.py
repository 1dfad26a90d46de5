"""Data quality of the snapshots: the dbt data tests and the checks that cross systems, in one report.

- `report`: what a quality run reports (`CheckResult`, `QualityReport`, rows of ops.dq_results);
- `dbt_results`: the checks that read one model's rows are dbt data tests (dbt/tests/generic/dq_*.sql), run by
  `dbt build` or `dbt test`; their run results and stored failures become checks of the report;
- `checks` (registered in `registry`): what crosses systems stays in Python: the lake against the warehouse, and
  freshness from the schedules (`freshness`);
- `context`: the snapshots under check and the SQL both engines speak alike; `runner`: `run_checks`.
"""

from flows.quality.context import DATASETS, RELATIONS, Context, Snap, table_name
from flows.quality.freshness import Freshness, dbt_freshness_vars, freshness_thresholds, scheduled_gaps
from flows.quality.registry import CHECKS, Check
from flows.quality.report import CATEGORIES, DQ_TABLE, ERROR, WARN, CheckResult, QualityReport
from flows.quality.runner import compile_checks, run_checks

__all__ = [
    "CATEGORIES", "CHECKS", "DATASETS", "DQ_TABLE", "ERROR", "RELATIONS", "WARN", "Check", "CheckResult", "Context",
    "Freshness", "QualityReport", "Snap", "compile_checks", "dbt_freshness_vars", "freshness_thresholds",
    "run_checks", "scheduled_gaps", "table_name",
]  # fmt: skip
