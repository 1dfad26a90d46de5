{#- Data quality: in the snapshot under check, the shares in `column_name` (percent of a total volume) add up to at
    most `max_total_pct`, and each is within `tolerance_points` of 100 x `volume` / the total, which is implied by
    the rows themselves (the median of volume / share). Fails for each row off, keyed by `key`, its share and the
    expected one, plus one row when the shares add up to too much. -#}
{% test dq_share_matches_volume(model, column_name, volume, key, tolerance_points, max_total_pct) %}

{{ dq_config(observed='max', threshold=max_total_pct) }}

with

checked_rows as (
    {{ dq_checked_rows(model) }}
),

rows_with_both as (
    select
        {{ dq_key(key) }} as item,
        {{ dq_float(volume) }} as volume,
        {{ dq_float(column_name) }} as share
    from checked_rows
    where {{ volume }} is not null and {{ column_name }} is not null
),

implied as (
    select {{ dq_median('volume / (share / 100.0)') }} as total
    from rows_with_both
    where volume > 0 and share > 0
),

compared as (
    select
        rows_with_both.item,
        rows_with_both.share,
        100.0 * rows_with_both.volume / implied.total as expected
    from rows_with_both
    cross join implied
),

off_rows as (
    select
        concat(item, ' ', {{ dq_num('share') }}, '% vs ', {{ dq_num('expected') }}, '%') as failing_key,
        abs(share - expected) as observed
    from compared
    where abs(share - expected) > {{ tolerance_points }}
),

total as (
    select
        concat('shares add up to ', {{ dq_num('sum(share)') }}, '%') as failing_key,
        sum(share) as observed
    from rows_with_both
    having sum(share) > {{ max_total_pct }}
)

select * from off_rows
union all
select * from total

{% endtest %}
