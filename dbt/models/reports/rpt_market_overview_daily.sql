{#- The market overview page: one row per asset per UTC day, from the day's latest assets snapshot (price, market
    cap, volume, 24-hour change) with the asset's share of that snapshot's total market cap (dominance) and the
    totals. Pre-aggregated to one snapshot a day, 64-bit floats for the charts; on BigQuery partitioned by
    report_date (the dashboard's date range) and clustered by rank and asset, so a chart reads only its days.
    The day's latest snapshot is int_latest_snapshot_per_day's; an asset's figures are those of its close of the
    day (int_asset_snapshots_daily), which is that snapshot for every asset it lists.

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

latest_snapshots as (

    select
        snapshot_date,
        snapshot_id

    from {{ ref('int_latest_snapshot_per_day') }}
    where dataset = 'assets' and snapshot_date >= {{ first_day }}

),

asset_days as (

    select * from {{ ref('int_asset_snapshots_daily') }}
    where snapshot_date >= {{ first_day }}

),

latest_assets as (

    -- the assets the day's latest snapshot lists: an asset it lists closes the day in it
    select asset_days.*
    from asset_days
    inner join latest_snapshots
        on
            asset_days.snapshot_date = latest_snapshots.snapshot_date
            and asset_days.close_snapshot_id = latest_snapshots.snapshot_id

),

totals as (

    -- exact decimal sums, so the totals do not depend on the order rows are added in
    select
        close_snapshot_id,
        {{ dbt.safe_cast('sum(close_market_cap_usd)', dbt.type_float()) }} as total_market_cap_usd,
        {{ dbt.safe_cast('sum(close_volume_usd_24h)', dbt.type_float()) }} as total_volume_usd_24h

    from latest_assets
    group by close_snapshot_id

),

final as (

    select
        latest_assets.snapshot_date as report_date,
        latest_assets.close_snapshot_id as snapshot_id,
        latest_assets.asset_id,
        latest_assets.close_asset_symbol as asset_symbol,
        latest_assets.close_asset_name as asset_name,
        latest_assets.close_asset_rank as asset_rank,
        {{ dbt.safe_cast('latest_assets.close_price_usd', dbt.type_float()) }} as price_usd,
        {{ dbt.safe_cast('latest_assets.close_market_cap_usd', dbt.type_float()) }} as market_cap_usd,
        {{ dbt.safe_cast('latest_assets.close_volume_usd_24h', dbt.type_float()) }} as volume_usd_24h,
        {{ dbt.safe_cast('latest_assets.close_change_percent_24h', dbt.type_float()) }} as change_percent_24h,
        100 * {{ dbt.safe_cast('latest_assets.close_market_cap_usd', dbt.type_float()) }}
        / nullif(totals.total_market_cap_usd, 0) as dominance_pct,
        totals.total_market_cap_usd,
        totals.total_volume_usd_24h,
        latest_assets.snapshot_date = max(latest_assets.snapshot_date) over () as is_latest_day

    from latest_assets
    inner join totals
        on latest_assets.close_snapshot_id = totals.close_snapshot_id

)

select * from final
