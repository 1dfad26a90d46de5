{#- Incremental: each run re-reads from the latest snapshot already loaded (>=), so a re-run of that snapshot
    replaces it. DuckDB deletes and re-inserts whole snapshots (a re-run that lists fewer assets leaves no stale
    rows); BigQuery merges on the grain for now. Snapshots older than the latest loaded one (a backfill) need
    --full-refresh. -#}
{{
    config(
        materialized='incremental',
        incremental_strategy=('merge' if target.type == 'bigquery' else 'delete+insert'),
        unique_key=(['asset_id', 'snapshot_id'] if target.type == 'bigquery' else 'snapshot_id'),
        partition_by=partition_by_day('snapshot_date'),
        cluster_by=['asset_id'],
        on_schema_change='fail',
    )
}}

with

asset_snapshots as (

    select * from {{ ref('stg_coincap__assets') }}

    {% if is_incremental() %}
        -- the latest snapshot already loaded is read again; an empty table (a first build on empty files)
        -- reads everything
        where snapshot_ts >= (
            select coalesce(max(loaded.snapshot_ts), cast('1970-01-01' as {{ dbt.type_timestamp() }}))
            from {{ this }} as loaded
        )
    {% endif %}

),

final as (

    select
        asset_id,
        snapshot_id,
        snapshot_ts,
        snapshot_date,
        asset_rank,
        price_usd,
        market_cap_usd,
        volume_usd_24h,
        vwap_24h,
        change_percent_24h,
        supply,
        max_supply,
        api_timestamp

    from asset_snapshots

)

select * from final
