{#- The pipeline health page: one row per UTC day per step (a dataset's extraction, or 'dbt') from the run-metrics
    table: runs and failed runs, records served / valid / quarantined / dropped as duplicates, API calls, credits,
    bytes and seconds, and when the step last succeeded and last failed (with that failure's one-line error).

    A view (over the staging view of ops.pipeline_runs, stg_ops__pipeline_runs): the run-metrics table gets its rows
    after the build (the dbt step records itself when it ends), and a view shows them at once. Empty until the
    pipeline has created the table (see stg_ops__pipeline_runs). -#}
{{ config(materialized='view') }}

with

runs as (

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

    from {{ ref('stg_ops__pipeline_runs') }}

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
