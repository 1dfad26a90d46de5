{#- Data quality: in the snapshot under check, `column_name` adds up to at most `max_sum` per `group_by` (e.g. the
    markets' shares of their exchange's volume). Fails for each group over, keyed by the group and its sum. -#}
{% test dq_group_sum_at_most(model, column_name, group_by, max_sum) %}

{{ dq_config(observed='max', threshold=max_sum) }}

with

checked_rows as (
    {{ dq_checked_rows(model) }}
),

sums as (
    select
        {{ dq_key(group_by) }} as item,
        sum({{ dq_float(column_name) }}) as total
    from checked_rows
    where {{ column_name }} is not null
    group by {{ dq_key(group_by) }}
)

select
    concat(item, ' ', {{ dq_num('total') }}, '%') as failing_key,
    total as observed
from sums
where total > {{ max_sum }}

{% endtest %}
