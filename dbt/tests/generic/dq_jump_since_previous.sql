{#- Data quality: between the model's previous snapshot (within `within_days` days) and the one under check,
    `column_name` of each `key` moved at most `max_pct` percent, up or down (flagged, not dropped: prices do
    jump). Fails for each row that moved more, keyed by `key` and the signed move in percent. -#}
{% test dq_jump_since_previous(model, column_name, key, max_pct, within_days=8) %}

{{ dq_config(observed='max', threshold=max_pct) }}

with

checked as (
    {{ dq_checked_and_previous(model, within_days) }}
),

paired as (
    {{ dq_paired_with_previous(model, column_name, key, 'checked') }}
),

moves as (
    select
        item,
        100.0 * (current_value / previous_value - 1) as move_pct
    from paired
    where previous_value > 0 and current_value is not null
)

select
    concat(item, ' ', {{ dq_num('move_pct', 1) }}, '%') as failing_key,
    abs(move_pct) as observed
from moves
where abs(move_pct) > {{ max_pct }}

{% endtest %}
