{#- Data quality: in the snapshot under check, `column_name` is within `tolerance_pct` percent of `field` of the
    matching row of `to` (another snapshot model), joined on `key` = `to_key`. `to` is read at its latest snapshot
    at or before the one under check, at most 24 hours older; without one nothing is compared (the test passes).
    Rows are those where `filter` holds (e.g. crypto rates only) and `field` is positive. Fails for each row further
    off, keyed by `key` and the signed deviation in percent. -#}
{% test dq_matches_reference(model, column_name, key, to, to_key, field, tolerance_pct, filter='true') %}

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

compared as (
    select
        {{ dq_key('checked_rows.' ~ key) }} as item,
        100.0 * ({{ dq_float('checked_rows.' ~ column_name) }} / {{ dq_float('reference.' ~ field) }} - 1) as off_pct
    from checked_rows
    inner join reference
        on reference.{{ to_key }} = checked_rows.{{ key }}
    where
        ({{ filter }})
        and checked_rows.{{ column_name }} is not null
        and reference.{{ field }} > 0
)

select
    concat(item, ' ', {{ dq_num('off_pct') }}, '%') as failing_key,
    abs(off_pct) as observed
from compared
where abs(off_pct) > {{ tolerance_pct }}

{% endtest %}
