{#- Data quality: in the snapshot under check, `column_name` does not exceed `limit_column` where that is positive
    (e.g. circulating supply vs max supply, whose 0 means none). Fails for each row above, keyed by `key` and the
    excess in percent. -#}
{% test dq_not_above_column(model, column_name, key, limit_column) %}

{{ dq_config(observed='max') }}

with

checked_rows as (
    {{ dq_checked_rows(model) }}
),

scored as (
    select
        {{ dq_key(key) }} as item,
        100.0 * ({{ dq_float(column_name) }} / {{ dq_float(limit_column) }} - 1) as excess
    from checked_rows
    where {{ limit_column }} > 0 and {{ column_name }} is not null
)

select
    concat(item, ' +', {{ dq_num('excess') }}, '%') as failing_key,
    excess as observed
from scored
where excess > 1e-7

{% endtest %}
