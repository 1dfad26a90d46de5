{#- Incremental like fct_asset_snapshots: re-read from the latest snapshot already loaded, replace whole
    snapshots on DuckDB, merge on the grain on BigQuery. -#}
{{
    config(
        materialized='incremental',
        incremental_strategy=('merge' if target.type == 'bigquery' else 'delete+insert'),
        unique_key=(
            ['exchange_id', 'base_asset_id', 'quote_asset_id', 'snapshot_id']
            if target.type == 'bigquery' else 'snapshot_id'
        ),
        partition_by=partition_by_day('snapshot_date'),
        cluster_by=['exchange_id', 'base_asset_id'],
        on_schema_change='fail',
    )
}}

with

markets as (

    select * from {{ ref('stg_coincap__markets') }}

    {% if is_incremental() %}
        where snapshot_ts >= (
            select coalesce(max(loaded.snapshot_ts), cast('1970-01-01' as {{ dbt.type_timestamp() }}))
            from {{ this }} as loaded
        )
    {% endif %}

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
