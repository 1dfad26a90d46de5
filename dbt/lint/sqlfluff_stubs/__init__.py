"""Lint-time stand-ins for what dbt provides when it renders a model, for sqlfluff's jinja templater.

sqlfluff (templater = jinja, apply_dbt_builtins) knows ref/source/config/var/is_incremental/this, but not
`target`, dbt's cross-database macros, or this project's macros. Each stand-in renders the SQL the real one
renders on the `local` (DuckDB) target; sqlfluff lints that SQL. Keep them in step with `dbt/macros/`.
"""

from types import SimpleNamespace

target = SimpleNamespace(type="duckdb", name="local", database="warehouse", schema="main")

# adapter.quote: an identifier quoted as DuckDB quotes it (`interval`, a reserved word, is a hive partition key)
adapter = SimpleNamespace(quote=lambda identifier: f'"{identifier}"')

dbt = SimpleNamespace(
    safe_cast=lambda field, type: f"try_cast({field} as {type})",
    type_float=lambda: "double",
    type_bigint=lambda: "bigint",
    type_string=lambda: "varchar",
    type_timestamp=lambda: "timestamp",
)


def type_exact_decimal() -> str:
    return "decimal(38, 18)"


def plausible_ms(ms: str) -> str:
    safe_ms = dbt.safe_cast(ms, dbt.type_bigint())
    return (
        f"case when {safe_ms} >= 1230768000000 and {safe_ms} < 4102444800000"
        f" then least(greatest({safe_ms}, 1230768000000), 4102444799999) end"
    )


def ms_to_timestamp(ms: str) -> str:
    return f"(epoch_ms({plausible_ms(ms)}) at time zone 'UTC')"


def plausible_amount(column: str) -> str:
    amount = dbt.safe_cast(column, type_exact_decimal())
    return f"case when abs({amount}) < cast(1000000000000000 as {type_exact_decimal()}) then {amount} end"


def add_days(date_expr: str, days: int) -> str:
    return f"({date_expr} + cast({days} as integer))"


def day_number(date_expr: str) -> str:
    return f"date_diff('day', date '1970-01-01', {date_expr})"


def partition_by_day(field: str, data_type: str = "date") -> None:
    return None


def recompute_from(day_column: str) -> str:
    return "cast('1970-01-01' as date)"


def utc_date(timestamp_expr: str) -> str:
    return f"cast(timezone('UTC', {timestamp_expr}) as date)"


def dedupe(relation: str, partition_by: str | list[str], order_by: str, where: str = "true") -> str:
    keys = partition_by if isinstance(partition_by, str) else ", ".join(partition_by)
    return (
        f"select * from {relation}\n    where {where}\n"
        f"    qualify row_number() over (partition by {keys} order by {order_by}) = 1"
    )
