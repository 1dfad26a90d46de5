{#- Which snapshot a data-quality test (tests/generic/dq_*.sql) reads, and the ones it compares with.

    A data-quality test checks one snapshot of its model: `PIPELINE_DQ_SNAPSHOT_ID` when the pipeline checks a
    given snapshot (`coincap-pipeline quality --snapshot-id`, flows/quality/runner.py), else the model's latest
    (a `dbt build`, by hand or in the pipeline, checks what it just built). The variable is read only when the
    test runs, never while dbt parses, so setting it keeps dbt's partial parse.

    On BigQuery `model` is already limited to the last `test_recent_days` days (macros/get_where_subquery.sql). -#}

{%- macro dq_chosen_snapshot_id() -%}
    {%- set chosen = env_var('PIPELINE_DQ_SNAPSHOT_ID', '') if execute else '' -%}
    {%- if chosen and not modules.re.fullmatch('[0-9]{8}T[0-9]{6}Z', chosen) -%}
        {{ exceptions.raise_compiler_error("PIPELINE_DQ_SNAPSHOT_ID is not a snapshot id (YYYYMMDDTHHMMSSZ): " ~ chosen) }}
    {%- endif -%}
    {{ return(chosen) }}
{%- endmacro -%}

{#- The snapshot_id under check, as a SQL expression. -#}
{%- macro dq_checked_snapshot_id(model) -%}
    {%- set chosen = dq_chosen_snapshot_id() -%}
    {%- if chosen -%}
        '{{ chosen }}'
    {%- else -%}
        (select max(snapshot_id) from {{ model }})
    {%- endif -%}
{%- endmacro -%}

{#- A whole SELECT, for a CTE: the rows of the snapshot under check. -#}
{%- macro dq_checked_rows(model) -%}
    select * from {{ model }}
    where snapshot_id = {{ dq_checked_snapshot_id(model) }}
{%- endmacro -%}

{#- A whole SELECT, for a CTE: one row, the snapshot under check (`snapshot_id`, `snapshot_ts`) and the one
    before it within `within_days` days (`previous_id`, null when there is none). -#}
{%- macro dq_checked_and_previous(model, within_days=8) -%}
    select
        checked.snapshot_id,
        checked.snapshot_ts,
        max(earlier.snapshot_id) as previous_id
    from (
        select snapshot_id, min(snapshot_ts) as snapshot_ts, min(snapshot_date) as snapshot_date
        from {{ model }}
        where snapshot_id = {{ dq_checked_snapshot_id(model) }}
        group by snapshot_id
    ) as checked
    left join (
        select distinct snapshot_id, snapshot_date from {{ model }}
    ) as earlier
        on earlier.snapshot_id < checked.snapshot_id
        and earlier.snapshot_date >= {{ add_days('checked.snapshot_date', -within_days) }}
    group by checked.snapshot_id, checked.snapshot_ts
{%- endmacro -%}

{#- A whole SELECT, for a CTE: the rows of `reference` (another snapshot model, a ref) from its latest snapshot at
    or before the snapshot under check (`checked`, a CTE from dq_checked_and_previous) and at most `within_hours`
    older; no row when there is none. -#}
{%- macro dq_reference_rows(reference, checked, within_hours=24) -%}
    select ref_rows.*
    from (select * from {{ get_where_subquery(reference) }}) as ref_rows
    inner join (
        select max(candidates.snapshot_id) as snapshot_id
        from (select distinct snapshot_id, snapshot_ts from {{ get_where_subquery(reference) }}) as candidates
        cross join {{ checked }}
        where
            candidates.snapshot_id <= {{ checked }}.snapshot_id
            and {{ dq_hours_between(checked ~ '.snapshot_ts', 'candidates.snapshot_ts') }} <= {{ within_hours }}
    ) as chosen
        on ref_rows.snapshot_id = chosen.snapshot_id
{%- endmacro -%}

{#- A whole SELECT, for a CTE: per `key`, `column` in the snapshot under check (`current_value`) and in the
    previous one (`previous_value`); `checked` is a CTE from dq_checked_and_previous. Keys in both only. -#}
{%- macro dq_paired_with_previous(model, column, key, checked) -%}
    select
        current_rows.item,
        current_rows.value as current_value,
        previous_rows.value as previous_value
    from (
        select {{ dq_key(key) }} as item, {{ dq_float(column) }} as value, snapshot_id
        from {{ model }}
    ) as current_rows
    inner join {{ checked }}
        on current_rows.snapshot_id = {{ checked }}.snapshot_id
    inner join (
        select {{ dq_key(key) }} as item, {{ dq_float(column) }} as value, snapshot_id
        from {{ model }}
    ) as previous_rows
        on previous_rows.item = current_rows.item
        and previous_rows.snapshot_id = {{ checked }}.previous_id
{%- endmacro -%}
