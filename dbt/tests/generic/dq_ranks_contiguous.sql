{#- Data quality: in the snapshot under check, the ranks in `column_name` run 1..N: no rank is missing. Fails once
    for each gap, keyed by the missing rank(s); observed is the number missing. -#}
{% test dq_ranks_contiguous(model, column_name, key) %}

{{ dq_config(observed='sum') }}

with

checked_rows as (
    {{ dq_checked_rows(model) }}
),

ranked as (
    select
        {{ column_name }} as item_rank,
        lag({{ column_name }}) over (order by {{ column_name }}, {{ dq_key(key) }}) as previous_rank
    from checked_rows
    where {{ column_name }} is not null
),

gaps as (
    select
        item_rank,
        previous_rank,
        greatest(item_rank - coalesce(previous_rank, 0) - 1, 0) as missing
    from ranked
)

select
    case
        when missing = 1 then concat('rank ', {{ dq_text('item_rank - 1') }})
        else concat('ranks ', {{ dq_text('coalesce(previous_rank, 0) + 1') }}, '-', {{ dq_text('item_rank - 1') }})
    end as failing_key,
    {{ dq_float('missing') }} as observed
from gaps
where missing > 0

{% endtest %}
