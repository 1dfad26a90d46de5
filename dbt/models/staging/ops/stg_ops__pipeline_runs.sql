{#- One row per pipeline step per run, from ops.pipeline_runs (written by the pipeline, not by dbt), with the
    columns the reports read. A view (the folder's materialization), so rows recorded after a build show at once.

    Until the first run records a row the table does not exist, and the view is built on an empty stand-in with the
    same columns and types (a warning says so; the pipeline creates the ops tables before it builds, so this only
    happens to a bare `dbt build`). The next build after the table exists reads it. -#}

{%- set runs_table = source('ops', 'pipeline_runs') %}
{%- set runs_table_missing = false %}
{%- if execute is sameas true %}
    {%- set runs_table_missing = adapter.get_relation(
        database=runs_table.database, schema=runs_table.schema, identifier=runs_table.identifier
    ) is none %}
{%- endif %}
{%- if runs_table_missing %}
    {%- do exceptions.warn(
        runs_table ~ " does not exist yet: stg_ops__pipeline_runs (and rpt_pipeline_health_daily) is empty until a"
        ~ " dbt build after the first pipeline run"
    ) %}
{%- endif %}

with

source as (

    {%- if runs_table_missing %}

        select
            cast(null as {{ dbt.type_string() }}) as flow_run_id,
            cast(null as {{ dbt.type_string() }}) as snapshot_id,
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
            flow_run_id,
            snapshot_id,
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

)

select * from source
