{#- The pipeline health page: one row per UTC day per step (a dataset's extraction, or 'dbt') from the run-metrics
    table: runs and failed runs, records served / valid / quarantined / dropped as duplicates, API calls, credits,
    bytes and seconds, and when the step last succeeded and last failed (with that failure's one-line error).

    A view: the run-metrics table gets its rows after the build (the dbt step records itself when it ends), and a
    view shows them at once. ops.pipeline_runs is written by the pipeline, not by dbt: until the first run records
    a row it does not exist, and the view is built on an empty stand-in with the same columns (a warning says so;
    the pipeline creates the ops tables before it builds, so this only happens to a bare `dbt build`). -#}
{{ config(materialized='view') }}

{%- set runs_table = source('ops', 'pipeline_runs') %}
{%- set runs_table_missing = false %}
{%- if execute is sameas true %}
    {%- set runs_table_missing = adapter.get_relation(
        database=runs_table.database, schema=runs_table.schema, identifier=runs_table.identifier
    ) is none %}
{%- endif %}
{%- if runs_table_missing %}
    {%- do exceptions.warn(
        runs_table ~ " does not exist yet: rpt_pipeline_health_daily is empty until a dbt build after the first"
        ~ " pipeline run"
    ) %}
{%- endif %}

with

runs as (

    {%- if runs_table_missing %}

        select
            cast(null as {{ dbt.type_string() }}) as step,
            cast(null as {{ dbt.type_string() }}) as status,
            {{ ms_to_timestamp('cast(null as ' ~ dbt.type_bigint() ~ ')') }} as started_at,
            cast(null as {{ dbt.type_float() }}) as seconds,
            cast(null as {{ dbt.type_bigint() }}) as served,
            cast(null as {{ dbt.type_bigint() }}) as duplicates,
            cast(null as {{ dbt.type_bigint() }}) as valid,
            cast(null as {{ dbt.type_bigint() }}) as quarantined,
            cast(null as {{ dbt.type_bigint() }}) as calls,
            cast(null as {{ dbt.type_bigint() }}) as bytes,
            cast(null as {{ dbt.type_bigint() }}) as credits,
            cast(null as {{ dbt.type_string() }}) as error
        from (select 1 as placeholder) as stand_in
        where false

    {%- else %}

        select
            step,
            status,
            started_at,
            seconds,
            served,
            duplicates,
            valid,
            quarantined,
            calls,
            bytes,
            credits,
            error

        from {{ runs_table }}

    {%- endif %}

),

dated as (

    select
        *,
        {{ utc_date('started_at') }} as report_date,
        -- the latest failure of the day comes first, for its error
        row_number() over (
            partition by {{ utc_date('started_at') }}, step, status
            order by started_at desc
        ) as recency

    from runs

),

final as (

    select
        report_date,
        step,
        {{ dbt.safe_cast('count(*)', dbt.type_float()) }} as runs,
        {{ dbt.safe_cast("sum(case when status = 'failed' then 1 else 0 end)", dbt.type_float()) }} as failed_runs,
        {{ dbt.safe_cast('sum(served)', dbt.type_float()) }} as served,
        {{ dbt.safe_cast('sum(valid)', dbt.type_float()) }} as valid,
        {{ dbt.safe_cast('sum(quarantined)', dbt.type_float()) }} as quarantined,
        {{ dbt.safe_cast('sum(duplicates)', dbt.type_float()) }} as duplicates,
        {{ dbt.safe_cast('sum(calls)', dbt.type_float()) }} as calls,
        {{ dbt.safe_cast('sum(credits)', dbt.type_float()) }} as credits,
        {{ dbt.safe_cast('sum(bytes)', dbt.type_float()) }} as bytes,
        sum(seconds) as seconds,
        max(case when status = 'completed' then started_at end) as last_success_at,
        max(case when status = 'failed' then started_at end) as last_failure_at,
        max(case when status = 'failed' and recency = 1 then error end) as last_error

    from dated
    group by report_date, step

)

select * from final
