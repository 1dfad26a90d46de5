{#- One row per asset per UTC day, aggregated from that day's snapshots. Exact decimals where the operation is
    exact (open, high, low, close, values at close); the average price and the VWAP are computed in 64-bit
    floats (a DECIMAL(38, 18) product would overflow on DuckDB and averages are not exact anyway). -#}

with

asset_snapshots as (

    select * from {{ ref('stg_coincap__assets') }}

),

ordered as (

    select
        asset_id,
        snapshot_date,
        snapshot_ts,
        price_usd,
        market_cap_usd,
        volume_usd_24h,
        row_number() over (
            partition by asset_id, snapshot_date
            order by snapshot_ts
        ) as nth_of_day,
        row_number() over (
            partition by asset_id, snapshot_date
            order by snapshot_ts desc
        ) as nth_from_end_of_day

    from asset_snapshots

),

final as (

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
        max(case when nth_from_end_of_day = 1 then volume_usd_24h end) as close_volume_usd_24h

    from ordered
    group by asset_id, snapshot_date

)

select * from final
