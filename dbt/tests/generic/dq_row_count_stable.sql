{#- Data quality: the snapshot under check has at most `max_drop_pct` percent fewer rows than the model's previous
    snapshot (within `within_days` days; without one nothing is compared). Fails once when it has, keyed by the
    two counts; observed is the drop in percent. -#}
{% test dq_row_count_stable(model, max_drop_pct, within_days=8) %}

{{ dq_config(observed='max', threshold=max_drop_pct) }}

with

checked as (
    {{ dq_checked_and_previous(model, within_days) }}
),

snapshot_rows as (
    select snapshot_id from {{ model }}
),

counts as (
    select
        sum(case when snapshot_rows.snapshot_id = checked.snapshot_id then 1 else 0 end) as current_rows,
        sum(case when snapshot_rows.snapshot_id = checked.previous_id then 1 else 0 end) as previous_rows
    from snapshot_rows
    inner join checked
        on snapshot_rows.snapshot_id in (checked.snapshot_id, checked.previous_id)
),

scored as (
    select
        current_rows,
        previous_rows,
        100.0 * (previous_rows - current_rows) / previous_rows as drop_pct
    from counts
    where previous_rows > 0
)

select
    concat({{ dq_text('previous_rows') }}, ' -> ', {{ dq_text('current_rows') }}, ' rows') as failing_key,
    drop_pct as observed
from scored
where drop_pct > {{ max_drop_pct }}

{% endtest %}
