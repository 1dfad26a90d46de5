{#- Incremental like fct_asset_snapshots: recompute the latest loaded UTC day and later ones, whole. The largest
    fact: on BigQuery queries must filter on snapshot_date (require_partition_filter). -#}
{{
    config(
        materialized='incremental',
        incremental_strategy=('insert_overwrite' if target.type == 'bigquery' else 'delete+insert'),
        unique_key='snapshot_date',
        partition_by=partition_by_day('snapshot_date'),
        cluster_by=['exchange_id', 'base_asset_id'],
        partition_expiration_days=var('granular_partition_expiration_days'),
        require_partition_filter=true,
        on_schema_change='fail',
    )
}}

{%- set first_day = recompute_from('snapshot_date') %}

with

markets as (

    select * from {{ ref('stg_coincap__markets') }}
    where snapshot_date >= {{ first_day }}

),

final as (

    select
        exchange_id,
        base_asset_id,
        quote_asset_id,
        snapshot_id,
        snapshot_ts,
        snapshot_date,
        base_symbol,
        quote_symbol,
        market_rank,
        price_usd,
        price_quote,
        volume_usd_24h,
        percent_exchange_volume,
        trades_count_24h,
        updated_at,
        api_timestamp

    from markets

)

select * from final
