{#- Data quality: in the snapshot under check, `column_name` lies within [min_value, max_value] (either bound
    optional; exclusive when min_inclusive / max_inclusive is false). Nulls pass unless nulls_fail. Fails for each
    row outside, keyed by `key` and the value. -#}
{% test dq_in_range(model, column_name, key, min_value=none, max_value=none, min_inclusive=true,
                    max_inclusive=true, nulls_fail=false) %}

{{ dq_config(observed='max' if max_value is not none else 'min', threshold=max_value) }}

{%- if min_value is none and max_value is none -%}
    {{ exceptions.raise_compiler_error("dq_in_range needs min_value or max_value on " ~ model) }}
{%- endif %}

with

checked_rows as (
    {{ dq_checked_rows(model) }}
),

failing as (
    select
        {{ dq_key(key) }} as item,
        {{ dq_float(column_name) }} as observed
    from checked_rows
    where
        {%- if nulls_fail %}
        {{ column_name }} is null or
        {%- else %}
        {{ column_name }} is not null and
        {%- endif %}
        not (
            true
            {%- if min_value is not none %}
            and {{ column_name }} {{ '>=' if min_inclusive else '>' }} {{ min_value }}
            {%- endif %}
            {%- if max_value is not none %}
            and {{ column_name }} {{ '<=' if max_inclusive else '<' }} {{ max_value }}
            {%- endif %}
        )
)

select
    concat(item, ' ', coalesce({{ dq_num('observed', 6) }}, 'null')) as failing_key,
    observed
from failing

{% endtest %}
