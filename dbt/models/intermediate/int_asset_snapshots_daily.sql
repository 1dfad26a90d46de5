{#- One row per asset per UTC day, aggregated from that day's snapshots. Exact decimals where the operation is
    exact (open, high, low, close, values at close); the average price and the VWAP are computed in 64-bit
    floats (a DECIMAL(38, 18) product would overflow on DuckDB and averages are not exact anyway).
    Days on which an asset has no snapshot (before its first one, or when a snapshot run failed) come from the
    history backfill's d1 point, CoinCap's average price of that UTC day: snapshots win on days that have them,
    so no day is counted twice. `price_source` tells the two apart. -#}

with

asset_snapshots as (

    select * from {{ ref('stg_coincap__assets') }}

),

-- one d1 point per UTC day; should CoinCap ever send two, the later one wins
asset_history as (

    {{ dedupe(
        ref('stg_coincap__asset_history'),
        ['asset_id', 'price_date'],
        'price_time_ms desc',
        where="history_interval = 'd1'",
    ) }}

),

ordered as (

    select
        asset_id,
        snapshot_date,
        snapshot_ts,
        snapshot_id,
        asset_rank,
        asset_symbol,
        asset_name,
        price_usd,
        market_cap_usd,
        volume_usd_24h,
        change_percent_24h,
        row_number() over (
            partition by asset_id, snapshot_date
            order by snapshot_ts
        ) as nth_of_day,
        row_number() over (
            partition by asset_id, snapshot_date
            order by snapshot_ts desc, snapshot_id desc
        ) as nth_from_end_of_day

    from asset_snapshots

),

snapshot_days as (

    select
        asset_id,
        snapshot_date,
        count(*) as snapshot_count,
        min(snapshot_ts) as first_snapshot_ts,
        max(snapshot_ts) as last_snapshot_ts,
        max(case when nth_of_day = 1 then price_usd end) as open_price_usd,
        max(price_usd) as high_price_usd,
        min(price_usd) as low_price_usd,
        max(case when nth_from_end_of_day = 1 then price_usd end) as close_price_usd,
        -- the sum of exact decimals is exact, so the average does not depend on the order rows are summed in
        {{ dbt.safe_cast('sum(price_usd)', dbt.type_float()) }} / count(*) as avg_price_usd,
        sum(
            {{ dbt.safe_cast('price_usd', dbt.type_float()) }}
            * {{ dbt.safe_cast('volume_usd_24h', dbt.type_float()) }}
        ) / nullif({{ dbt.safe_cast('sum(volume_usd_24h)', dbt.type_float()) }}, 0) as vwap_usd,
        max(case when nth_from_end_of_day = 1 then market_cap_usd end) as close_market_cap_usd,
        max(case when nth_from_end_of_day = 1 then volume_usd_24h end) as close_volume_usd_24h,
        -- the closing snapshot itself, and what it said of the asset: the reports show a day as of its close
        max(case when nth_from_end_of_day = 1 then snapshot_id end) as close_snapshot_id,
        max(case when nth_from_end_of_day = 1 then asset_rank end) as close_asset_rank,
        max(case when nth_from_end_of_day = 1 then asset_symbol end) as close_asset_symbol,
        max(case when nth_from_end_of_day = 1 then asset_name end) as close_asset_name,
        max(case when nth_from_end_of_day = 1 then change_percent_24h end) as close_change_percent_24h

    from ordered
    group by asset_id, snapshot_date

),

history_days as (

    -- the d1 point is the day's average: it stands for open, high, low, close and average alike
    select
        asset_history.asset_id,
        asset_history.price_date as snapshot_date,
        cast(0 as {{ dbt.type_bigint() }}) as snapshot_count,
        -- typed nulls: BigQuery types a bare NULL that passes through a CTE as INT64, and the UNION ALL below
        -- then fails (TIMESTAMP vs INT64); `coincap-pipeline check-sql` catches it offline
        cast(null as {{ dbt.type_timestamp() }}) as first_snapshot_ts,
        cast(null as {{ dbt.type_timestamp() }}) as last_snapshot_ts,
        asset_history.price_usd as open_price_usd,
        asset_history.price_usd as high_price_usd,
        asset_history.price_usd as low_price_usd,
        asset_history.price_usd as close_price_usd,
        {{ dbt.safe_cast('asset_history.price_usd', dbt.type_float()) }} as avg_price_usd,
        cast(null as {{ dbt.type_float() }}) as vwap_usd,
        cast(null as {{ type_exact_decimal() }}) as close_market_cap_usd,
        cast(null as {{ type_exact_decimal() }}) as close_volume_usd_24h,
        cast(null as {{ dbt.type_string() }}) as close_snapshot_id,
        cast(null as {{ dbt.type_bigint() }}) as close_asset_rank,
        cast(null as {{ dbt.type_string() }}) as close_asset_symbol,
        cast(null as {{ dbt.type_string() }}) as close_asset_name,
        cast(null as {{ type_exact_decimal() }}) as close_change_percent_24h

    from asset_history
    left join snapshot_days
        on
            asset_history.asset_id = snapshot_days.asset_id
            and asset_history.price_date = snapshot_days.snapshot_date
    where snapshot_days.asset_id is null

),

final as (

    select
        *,
        'snapshots' as price_source
    from snapshot_days

    union all

    select
        *,
        'history' as price_source
    from history_days

)

select * from final
