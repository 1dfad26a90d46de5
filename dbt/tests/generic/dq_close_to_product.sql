{#- Data quality: in the snapshot under check, `column_name` is within `tolerance_pct` percent of the product of
    `factors` (e.g. market cap vs price x supply, multiplied as floats: exact decimals would overflow), where all are
    known. Fails for each row further off, keyed by `key` and the deviation in percent. -#}
{% test dq_close_to_product(model, column_name, key, factors, tolerance_pct) %}

{{ dq_config(observed='max', threshold=tolerance_pct) }}

with

checked_rows as (
    {{ dq_checked_rows(model) }}
),

compared as (
    select
        {{ dq_key(key) }} as item,
        {{ dq_float(column_name) }} as actual,
        {% for f in factors %}{{ dq_float(f) }}{% if not loop.last %} * {% endif %}{% endfor %} as expected
    from checked_rows
    where {{ column_name }} is not null{% for f in factors %} and {{ f }} is not null{% endfor %}
),

scored as (
    select
        item,
        case
            when expected > 0 then 100.0 * abs(actual / expected - 1)
            when actual > 0 then 100.0
            else 0.0
        end as off_pct
    from compared
)

select
    concat(item, ' ', {{ dq_num('off_pct') }}, '% off') as failing_key,
    off_pct as observed
from scored
where off_pct > {{ tolerance_pct }}

{% endtest %}
