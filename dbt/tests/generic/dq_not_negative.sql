{#- Data quality: in the snapshot under check, none of `columns` is negative and none of `percent_columns` is over
    100 (nulls pass). Fails for each row with such a value; its key shows the worst one. -#}
{% test dq_not_negative(model, key, columns, percent_columns=[]) %}

{{ dq_config(observed='min') }}

{%- set lowest -%}
    least({% for c in columns %}coalesce({{ dq_float(c) }}, 0){% if not loop.last %}, {% endif %}{% endfor %})
{%- endset -%}
{%- set share -%}
    {%- if percent_columns -%}
        greatest({% for c in percent_columns %}coalesce({{ dq_float(c) }}, 0){% if not loop.last %}, {% endif %}{% endfor %})
    {%- else -%}
        0
    {%- endif -%}
{%- endset %}

with

checked_rows as (
    {{ dq_checked_rows(model) }}
),

scored as (
    select
        {{ dq_key(key) }} as item,
        {{ lowest }} as lowest,
        {{ share }} as share
    from checked_rows
),

failing as (
    select
        item,
        case when lowest < 0 then lowest else share end as observed
    from scored
    where lowest < 0 or share > 100.000001
)

select
    concat(item, ' ', {{ dq_num('observed', 6) }}) as failing_key,
    observed
from failing

{% endtest %}
