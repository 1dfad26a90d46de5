{#- The markets page: one row per exchange x base asset x quote asset per UTC day, from the day's latest markets
    snapshot: the pair's USD price and 24-hour volume, its share of its exchange's volume in that snapshot, and
    how far its price is from the base asset's own price (in the day's assets snapshot closest in time to the
    markets snapshot that lists the asset; null when no assets snapshot of the day does).

    The largest report: on BigQuery partitioned by report_date (queries must filter on it), clustered by exchange
    and base asset, and its partitions expire with the snapshot facts it is built from. Incremental like them. -#}
{{
    config(
        materialized='incremental',
        incremental_strategy=('insert_overwrite' if target.type == 'bigquery' else 'delete+insert'),
        unique_key='report_date',
        partition_by=partition_by_day('report_date'),
        cluster_by=['exchange_id', 'base_asset_id'],
        partition_expiration_days=var('granular_partition_expiration_days'),
        require_partition_filter=true,
        on_schema_change='fail',
    )
}}

{%- set first_day = recompute_from('report_date') %}

with

market_snapshots as (

    select * from {{ ref('fct_market_snapshots') }}
    where snapshot_date >= {{ first_day }}

),

asset_snapshots as (

    select
        asset_id,
        snapshot_date,
        snapshot_ts,
        price_usd,
        -- both snapshots are of the same UTC day, so the second of the day is enough to compare them
        extract(hour from snapshot_ts) * 3600
        + extract(minute from snapshot_ts) * 60
        + extract(second from snapshot_ts) as second_of_day

    from {{ ref('fct_asset_snapshots') }}
    where snapshot_date >= {{ first_day }}

),

latest_market_snapshots as (

    select
        snapshot_date,
        snapshot_id

    from {{ ref('int_latest_snapshot_per_day') }}
    where dataset = 'markets' and snapshot_date >= {{ first_day }}

),

latest_markets as (

    select
        market_snapshots.*,
        extract(hour from market_snapshots.snapshot_ts) * 3600
        + extract(minute from market_snapshots.snapshot_ts) * 60
        + extract(second from market_snapshots.snapshot_ts) as second_of_day,
        -- an exact decimal sum, so the share does not depend on the order rows are added in
        {{ dbt.safe_cast(
            'sum(market_snapshots.volume_usd_24h) over ('
            ~ 'partition by market_snapshots.snapshot_id, market_snapshots.exchange_id)',
            dbt.type_float()
        ) }} as exchange_volume_usd_24h

    from market_snapshots
    inner join latest_market_snapshots
        on
            market_snapshots.snapshot_date = latest_market_snapshots.snapshot_date
            and market_snapshots.snapshot_id = latest_market_snapshots.snapshot_id

),

base_assets as (

    select distinct
        snapshot_date,
        second_of_day,
        base_asset_id

    from latest_markets

),

ranked_base_prices as (

    select
        base_assets.snapshot_date,
        base_assets.base_asset_id,
        asset_snapshots.price_usd,
        row_number() over (
            partition by base_assets.snapshot_date, base_assets.base_asset_id
            order by abs(asset_snapshots.second_of_day - base_assets.second_of_day), asset_snapshots.snapshot_ts
        ) as closeness

    from base_assets
    inner join asset_snapshots
        on
            base_assets.snapshot_date = asset_snapshots.snapshot_date
            and base_assets.base_asset_id = asset_snapshots.asset_id

),

base_prices as (

    select
        snapshot_date,
        base_asset_id,
        {{ dbt.safe_cast('price_usd', dbt.type_float()) }} as asset_price_usd

    from ranked_base_prices
    where closeness = 1

),

final as (

    select
        latest_markets.snapshot_date as report_date,
        latest_markets.exchange_id,
        latest_markets.base_asset_id,
        latest_markets.quote_asset_id,
        latest_markets.snapshot_id,
        latest_markets.base_symbol,
        latest_markets.quote_symbol,
        coalesce(latest_markets.base_symbol, latest_markets.base_asset_id)
        || '/'
        || coalesce(latest_markets.quote_symbol, latest_markets.quote_asset_id) as pair,
        latest_markets.market_rank,
        {{ dbt.safe_cast('latest_markets.price_usd', dbt.type_float()) }} as price_usd,
        {{ dbt.safe_cast('latest_markets.volume_usd_24h', dbt.type_float()) }} as volume_usd_24h,
        100 * {{ dbt.safe_cast('latest_markets.volume_usd_24h', dbt.type_float()) }}
        / nullif(latest_markets.exchange_volume_usd_24h, 0) as volume_share_of_exchange_pct,
        base_prices.asset_price_usd,
        100 * (
            {{ dbt.safe_cast('latest_markets.price_usd', dbt.type_float()) }}
            / nullif(base_prices.asset_price_usd, 0)
            - 1
        ) as price_deviation_pct,
        latest_markets.snapshot_date = max(latest_markets.snapshot_date) over () as is_latest_day

    from latest_markets
    left join base_prices
        on
            latest_markets.snapshot_date = base_prices.snapshot_date
            and latest_markets.base_asset_id = base_prices.base_asset_id

)

select * from final
