{#- Data quality: in the snapshot under check, the 24-hour VWAP in `column_name` lies between the price 24 hours ago
    (`price` / (1 + `change_pct` / 100)) and now, give or take `tolerance_pct` percent. Fails for each row further
    outside, keyed by `key` and how far outside in percent. -#}
{% test dq_vwap_in_range(model, column_name, key, price, change_pct, tolerance_pct) %}

{{ dq_config(observed='max', threshold=tolerance_pct) }}

with

checked_rows as (
    {{ dq_checked_rows(model) }}
),

prices as (
    select
        {{ dq_key(key) }} as item,
        {{ dq_float(column_name) }} as vwap,
        {{ dq_float(price) }} as price_now,
        {{ dq_float(price) }} / (1 + coalesce({{ dq_float(change_pct) }}, 0) / 100.0) as price_before
    from checked_rows
    where {{ column_name }} is not null and {{ price }} > 0 and coalesce({{ change_pct }}, 0) > -100
),

ranges as (
    select
        item,
        vwap,
        least(price_now, price_before) as low,
        greatest(price_now, price_before) as high
    from prices
),

scored as (
    select
        item,
        100.0 * greatest(low - vwap, vwap - high, 0) / (case when vwap < low then low else high end) as outside_pct
    from ranges
)

select
    concat(item, ' ', {{ dq_num('outside_pct', 1) }}, '% outside') as failing_key,
    outside_pct as observed
from scored
where outside_pct > {{ tolerance_pct }}

{% endtest %}
