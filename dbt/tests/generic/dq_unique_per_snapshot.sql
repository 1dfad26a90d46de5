{#- Data quality: in the snapshot under check, `columns` (expressions allowed, e.g. `upper(asset_symbol)`) identify
    one row, or with `distinct`, one value of that column (e.g. one asset per ticker symbol). Nulls are left out.
    Fails for each value held more than once, keyed by it and the copies (or, with `show`, the first and last
    holder); observed is the extra rows. -#}
{% test dq_unique_per_snapshot(model, columns, distinct=none, show=none) %}

{{ dq_config(observed='sum') }}

{%- set columns = [columns] if columns is string else columns %}

with

checked_rows as (
    {{ dq_checked_rows(model) }}
),

counted as (
    select
        {{ dq_key(columns) }} as item,
        count({{ ('distinct ' ~ distinct) if distinct else '*' }}) as copies
        {%- if show %},
        min({{ dq_text(show) }}) as first_holder,
        max({{ dq_text(show) }}) as last_holder
        {%- endif %}
    from checked_rows
    where {% for c in columns %}{{ c }} is not null{% if not loop.last %} and {% endif %}{% endfor %}
    group by {{ dq_key(columns) }}
)

select
    {%- if show %}
    concat(item, ' (', first_holder, ', ', last_holder, ')') as failing_key,
    {%- else %}
    concat(item, ' x', {{ dq_text('copies') }}) as failing_key,
    {%- endif %}
    {{ dq_float('copies - 1') }} as observed
from counted
where copies > 1

{% endtest %}
