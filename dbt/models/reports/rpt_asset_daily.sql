{#- The asset detail page: one row per asset per UTC day from fct_asset_daily (OHLC, 7- and 30-day moving averages,
    30-day volatility, volume and market cap at the close, % changes), every measure a 64-bit float, with the
    asset's symbol and name. On BigQuery partitioned by report_date and clustered by asset_id: the page filters
    on one asset and a date range, so it reads a sliver of each day.

    Symbol and name come from the day's closing snapshot (a later rename does not rewrite history, so an
    incremental run equals a full refresh); days filled from the history backfill have no snapshot and take the
    asset's current ones (dim_assets). Incremental like fct_asset_daily: the latest loaded day and later ones. -#}
{{
    config(
        materialized='incremental',
        incremental_strategy=('insert_overwrite' if target.type == 'bigquery' else 'delete+insert'),
        unique_key='report_date',
        partition_by=partition_by_day('report_date'),
        cluster_by=['asset_id'],
        on_schema_change='fail',
    )
}}

{%- set first_day = recompute_from('report_date') %}

with

asset_days as (

    select * from {{ ref('fct_asset_daily') }}
    where price_date >= {{ first_day }}

),

closing_snapshots as (

    -- what the day's closing snapshot said of the asset (null on days filled from history)
    select
        asset_id,
        snapshot_date,
        close_asset_symbol as asset_symbol,
        close_asset_name as asset_name

    from {{ ref('int_asset_snapshots_daily') }}
    where snapshot_date >= {{ first_day }}

),

assets as (

    select
        asset_id,
        asset_symbol,
        asset_name

    from {{ ref('dim_assets') }}

),

final as (

    select
        asset_days.price_date as report_date,
        asset_days.asset_id,
        coalesce(closing_snapshots.asset_symbol, assets.asset_symbol) as asset_symbol,
        coalesce(closing_snapshots.asset_name, assets.asset_name) as asset_name,
        {{ dbt.safe_cast('asset_days.open_price_usd', dbt.type_float()) }} as open_price_usd,
        {{ dbt.safe_cast('asset_days.high_price_usd', dbt.type_float()) }} as high_price_usd,
        {{ dbt.safe_cast('asset_days.low_price_usd', dbt.type_float()) }} as low_price_usd,
        {{ dbt.safe_cast('asset_days.close_price_usd', dbt.type_float()) }} as close_price_usd,
        asset_days.moving_avg_close_7d as moving_avg_7d,
        asset_days.moving_avg_close_30d as moving_avg_30d,
        asset_days.volatility_30d,
        asset_days.volatility_30d_annualised,
        {{ dbt.safe_cast('asset_days.close_volume_usd_24h', dbt.type_float()) }} as volume_usd_24h,
        {{ dbt.safe_cast('asset_days.close_market_cap_usd', dbt.type_float()) }} as market_cap_usd,
        asset_days.pct_change_1d,
        asset_days.pct_change_7d,
        asset_days.pct_change_30d,
        asset_days.price_source,
        {{ dbt.safe_cast('asset_days.snapshot_count', dbt.type_float()) }} as snapshot_count

    from asset_days
    left join closing_snapshots
        on
            asset_days.asset_id = closing_snapshots.asset_id
            and asset_days.price_date = closing_snapshots.snapshot_date
    left join assets
        on asset_days.asset_id = assets.asset_id

)

select * from final
