{#- Data quality: in the snapshot under check, per `group_by` (e.g. a market's base asset), the median deviation of
    `column_name` from `field` of the matching row of `to` (joined on `group_by` = `to_key`) is within
    `tolerance_pct` percent. Only rows whose `fresh_column` is at most `fresh_hours` older than the snapshot
    count (a market not updated for a day is not compared), and positive values. `to` is read as in
    dq_matches_reference. Fails for each group further off, keyed by it, the median deviation and the rows. -#}
{% test dq_median_matches_reference(model, column_name, group_by, to, to_key, field, tolerance_pct,
                                    fresh_column, fresh_hours=24) %}

{{ dq_config(observed='max', threshold=tolerance_pct) }}

with

checked_rows as (
    {{ dq_checked_rows(model) }}
),

checked as (
    {{ dq_checked_and_previous(model) }}
),

reference as (
    {{ dq_reference_rows(to, 'checked') }}
),

deviations as (
    select
        checked_rows.{{ group_by }} as item,
        100.0 * ({{ dq_float('checked_rows.' ~ column_name) }} / {{ dq_float('reference.' ~ field) }} - 1)
            as deviation
    from checked_rows
    cross join checked
    inner join reference
        on reference.{{ to_key }} = checked_rows.{{ group_by }}
    where
        checked_rows.{{ column_name }} > 0
        and reference.{{ field }} > 0
        and {{ dq_hours_between('checked.snapshot_ts', 'checked_rows.' ~ fresh_column) }} <= {{ fresh_hours }}
),

medians as (
    select
        {{ dq_text('item') }} as item,
        {{ dq_median('deviation') }} as median_deviation,
        count(*) as compared_rows
    from deviations
    group by item
)

select
    concat(item, ' ', {{ dq_num('median_deviation', 1) }}, '% over ', {{ dq_text('compared_rows') }}, ' rows')
        as failing_key,
    abs(median_deviation) as observed
from medians
where abs(median_deviation) > {{ tolerance_pct }}

{% endtest %}
