{#- One row per data-quality check per quality run, from ops.dq_results (written by flows/quality/, not by dbt).
    A view (the folder's materialization), so results recorded after a build show at once.

    Until the first quality run stores a result the table does not exist, and the view is built on an empty
    stand-in with the same columns and types (a warning says so; the pipeline creates the ops tables before it
    builds, so this only happens to a bare `dbt build`). The next build after the table exists reads it. -#}

{%- set results_table = source('ops', 'dq_results') %}
{%- set results_table_missing = false %}
{%- if execute is sameas true %}
    {%- set results_table_missing = adapter.get_relation(
        database=results_table.database, schema=results_table.schema, identifier=results_table.identifier
    ) is none %}
{%- endif %}
{%- if results_table_missing %}
    {%- do exceptions.warn(
        results_table ~ " does not exist yet: stg_ops__dq_results (and rpt_data_quality) is empty until a dbt build"
        ~ " after the first quality run"
    ) %}
{%- endif %}

with

source as (

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

)

select * from source
