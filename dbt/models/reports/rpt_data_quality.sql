{#- The data-quality panel of the pipeline health page: one row per check per quality run (ops.dq_results, written
    by flows/quality/), with the UTC day it ran, whether the row belongs to the latest quality run
    (`is_latest_run`), and whether it is the latest result of its check (`is_latest_for_check`: the current
    state of every check, even when the latest run checked only some of them, such as a freshness watchdog).

    A view (over the staging view of ops.dq_results, stg_ops__dq_results), so results recorded after a build show
    at once. Empty until the first quality run has created the table (see stg_ops__dq_results). -#}
{{ config(materialized='view') }}

with

results as (

    select * from {{ ref('stg_ops__dq_results') }}

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
