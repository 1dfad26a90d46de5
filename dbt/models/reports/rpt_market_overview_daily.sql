{#- The market overview page: one row per asset per UTC day, from the day's latest assets snapshot (price, market
    cap, volume, 24-hour change) with the asset's share of that snapshot's total market cap (dominance) and the
    totals. Pre-aggregated to one snapshot a day, 64-bit floats for the charts; on BigQuery partitioned by
    report_date (the dashboard's date range) and clustered by rank and asset, so a chart reads only its days.

    Incremental like the facts: the latest loaded day and later days are recomputed whole, so a re-run snapshot
    replaces its day and `is_latest_day` moves to the newest day (the day it leaves is recomputed too). -#}
{{
    config(
        materialized='incremental',
        incremental_strategy=('insert_overwrite' if target.type == 'bigquery' else 'delete+insert'),
        unique_key='report_date',
        partition_by=partition_by_day('report_date'),
        cluster_by=['asset_rank', 'asset_id'],
        on_schema_change='fail',
    )
}}

{%- set first_day = recompute_from('report_date') %}

with

asset_snapshots as (

    select * from {{ ref('stg_coincap__assets') }}
    where snapshot_date >= {{ first_day }}

),

snapshots as (

    select
        snapshot_date,
        snapshot_id,
        max(snapshot_ts) as snapshot_ts

    from asset_snapshots
    group by snapshot_date, snapshot_id

),

ranked_snapshots as (

    select
        *,
        row_number() over (partition by snapshot_date order by snapshot_ts desc, snapshot_id desc) as recency

    from snapshots

),

latest_assets as (

    select asset_snapshots.*
    from asset_snapshots
    inner join ranked_snapshots
        on
            asset_snapshots.snapshot_date = ranked_snapshots.snapshot_date
            and asset_snapshots.snapshot_id = ranked_snapshots.snapshot_id
    where ranked_snapshots.recency = 1

),

totals as (

    -- exact decimal sums, so the totals do not depend on the order rows are added in
    select
        snapshot_id,
        {{ dbt.safe_cast('sum(market_cap_usd)', dbt.type_float()) }} as total_market_cap_usd,
        {{ dbt.safe_cast('sum(volume_usd_24h)', dbt.type_float()) }} as total_volume_usd_24h

    from latest_assets
    group by snapshot_id

),

final as (

    select
        latest_assets.snapshot_date as report_date,
        latest_assets.snapshot_id,
        latest_assets.asset_id,
        latest_assets.asset_symbol,
        latest_assets.asset_name,
        latest_assets.asset_rank,
        {{ dbt.safe_cast('latest_assets.price_usd', dbt.type_float()) }} as price_usd,
        {{ dbt.safe_cast('latest_assets.market_cap_usd', dbt.type_float()) }} as market_cap_usd,
        {{ dbt.safe_cast('latest_assets.volume_usd_24h', dbt.type_float()) }} as volume_usd_24h,
        {{ dbt.safe_cast('latest_assets.change_percent_24h', dbt.type_float()) }} as change_percent_24h,
        100 * {{ dbt.safe_cast('latest_assets.market_cap_usd', dbt.type_float()) }}
        / nullif(totals.total_market_cap_usd, 0) as dominance_pct,
        totals.total_market_cap_usd,
        totals.total_volume_usd_24h,
        latest_assets.snapshot_date = max(latest_assets.snapshot_date) over () as is_latest_day

    from latest_assets
    inner join totals
        on latest_assets.snapshot_id = totals.snapshot_id

)

select * from final
