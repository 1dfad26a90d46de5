{#- Data quality: between the model's previous snapshot (within `within_days` days) and the one under check,
    `column_name` of each `key` grew at most `max_factor` times, unless it is now below `min_value` (noise).
    Fails for each row that grew more, keyed by `key` and the factor. -#}
{% test dq_growth_since_previous(model, column_name, key, max_factor, min_value=0, within_days=8) %}

{{ dq_config(observed='max', threshold=max_factor) }}

with

checked as (
    {{ dq_checked_and_previous(model, within_days) }}
),

paired as (
    {{ dq_paired_with_previous(model, column_name, key, 'checked') }}
),

growth as (
    select
        item,
        current_value / previous_value as factor
    from paired
    where previous_value > 0 and current_value >= {{ min_value }}
)

select
    concat(item, ' x', {{ dq_num('factor', 1) }}) as failing_key,
    factor as observed
from growth
where factor > {{ max_factor }}

{% endtest %}
