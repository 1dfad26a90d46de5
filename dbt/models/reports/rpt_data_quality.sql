{#- The data-quality panel of the pipeline health page: one row per check per quality run (ops.dq_results, written
    by flows/quality.py), with the UTC day it ran, whether the row belongs to the latest quality run
    (`is_latest_run`), and whether it is the latest result of its check (`is_latest_for_check`: the current
    state of every check, even when the latest run checked only some of them, such as a freshness watchdog).

    A view, so results recorded after a build show at once. Until the first quality run stores a result the
    table does not exist, and the view is built on an empty stand-in with the same columns (with a warning; the
    pipeline creates the ops tables before it builds, so this only happens to a bare `dbt build`). -#}
{{ config(materialized='view') }}

{%- set results_table = source('ops', 'dq_results') %}
{%- set results_table_missing = false %}
{%- if execute is sameas true %}
    {%- set results_table_missing = adapter.get_relation(
        database=results_table.database, schema=results_table.schema, identifier=results_table.identifier
    ) is none %}
{%- endif %}
{%- if results_table_missing %}
    {%- do exceptions.warn(
        results_table ~ " does not exist yet: rpt_data_quality is empty until a dbt build after the first"
        ~ " quality run"
    ) %}
{%- endif %}

with

results as (

    {%- if results_table_missing %}

        select
            cast(null as {{ dbt.type_string() }}) as run_id,
            cast(null as {{ dbt.type_string() }}) as flow_run_id,
            cast(null as {{ dbt.type_string() }}) as snapshot_id,
            {{ ms_to_timestamp('cast(null as ' ~ dbt.type_bigint() ~ ')') }} as checked_at,
            cast(null as {{ dbt.type_string() }}) as check_name,
            cast(null as {{ dbt.type_string() }}) as category,
            cast(null as {{ dbt.type_string() }}) as dataset,
            cast(null as {{ dbt.type_string() }}) as severity,
            cast(null as {{ dbt.type_string() }}) as status,
            cast(null as {{ dbt.type_float() }}) as observed,
            cast(null as {{ dbt.type_float() }}) as threshold,
            cast(null as {{ dbt.type_bigint() }}) as failing_rows,
            cast(null as {{ dbt.type_string() }}) as detail,
            cast(null as {{ dbt.type_string() }}) as description
        from (select 1 as placeholder) as stand_in
        where false

    {%- else %}

        select
            run_id,
            flow_run_id,
            snapshot_id,
            checked_at,
            check_name,
            category,
            dataset,
            severity,
            status,
            observed,
            threshold,
            failing_rows,
            detail,
            description

        from {{ results_table }}

    {%- endif %}

),

quality_runs as (

    select
        run_id,
        min(checked_at) as run_checked_at

    from results
    group by run_id

),

latest_run as (

    select run_id
    from quality_runs
    order by run_checked_at desc, run_id desc
    limit 1

),

ranked as (

    select
        *,
        row_number() over (partition by check_name order by checked_at desc, run_id desc) as check_recency

    from results

),

final as (

    select
        ranked.run_id,
        ranked.flow_run_id,
        ranked.snapshot_id,
        ranked.checked_at,
        ranked.check_name,
        ranked.category,
        ranked.dataset,
        ranked.severity,
        ranked.status,
        ranked.observed,
        ranked.threshold,
        ranked.failing_rows,
        ranked.detail,
        ranked.description,
        {{ utc_date('ranked.checked_at') }} as report_date,
        latest_run.run_id is not null as is_latest_run,
        ranked.check_recency = 1 as is_latest_for_check

    from ranked
    left join latest_run
        on ranked.run_id = latest_run.run_id

)

select * from final
