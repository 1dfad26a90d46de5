{#- Data quality: in the snapshot under check, none of the timestamp `columns` lies more than `slack_minutes` after
    the test runs (clocks differ). Fails for each such value, keyed by `key`, the column and how far ahead. -#}
{% test dq_not_in_future(model, key, columns, slack_minutes=5) %}

{{ dq_config(observed='max') }}

with

checked_rows as (
    {{ dq_checked_rows(model) }}
),

moments as (
    {%- for column in columns %}
    select
        {{ dq_key(key) }} as item,
        '{{ column }}' as field,
        {{ dq_hours_between(column, dbt.current_timestamp()) }} as hours_ahead
    from checked_rows
    where {{ column }} is not null
    {%- if not loop.last %}
    union all
    {%- endif %}
    {%- endfor %}
)

select
    concat(item, ' ', field, ' +', {{ dq_num('hours_ahead', 1) }}, ' h') as failing_key,
    hours_ahead as observed
from moments
where hours_ahead > {{ slack_minutes }} / 60.0

{% endtest %}
