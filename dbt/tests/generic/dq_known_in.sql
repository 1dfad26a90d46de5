{#- Data quality: in the snapshot under check, at most `max_unknown_pct` percent of the rows name a `column_name`
    that `to` (another snapshot model, read as in dq_matches_reference) does not list in `field` (e.g. markets on
    exchanges /exchanges does not list). When over the limit, fails for each unknown value, keyed by it and its
    rows; observed is its share of the rows (they add up to the check's). -#}
{% test dq_known_in(model, column_name, to, field, max_unknown_pct) %}

{{ dq_config(observed='sum', threshold=max_unknown_pct) }}

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

known as (
    select distinct {{ field }} as value from reference
),

counted as (
    select
        checked_rows.{{ column_name }} as value,
        count(*) as item_rows,
        max(case when known.value is null then 1 else 0 end) as unknown
    from checked_rows
    left join known
        on known.value = checked_rows.{{ column_name }}
    where exists (select 1 from known)
    group by checked_rows.{{ column_name }}
),

shares as (
    select
        value,
        item_rows,
        unknown,
        100.0 * item_rows / sum(item_rows) over () as share,
        sum(case when unknown = 1 then 100.0 * item_rows else 0 end) over () / sum(item_rows) over () as unknown_share
    from counted
)

select
    concat({{ dq_text('value') }}, ' (', {{ dq_text('item_rows') }}, ' rows)') as failing_key,
    share as observed
from shares
where unknown = 1 and unknown_share > {{ max_unknown_pct }}

{% endtest %}
