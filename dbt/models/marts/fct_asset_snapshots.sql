{#- Incremental: each run recomputes the latest UTC day already loaded and every later one, whole, so a re-run of
    a snapshot replaces it and a re-run that lists fewer assets leaves no stale rows (incremental = full refresh).
    DuckDB deletes and re-inserts those days; BigQuery overwrites their partitions (insert_overwrite), reading only
    the matching staging partitions. Snapshots of days before the latest loaded one (a backfill) need
    --full-refresh. -#}
{{
    config(
        materialized='incremental',
        incremental_strategy=('insert_overwrite' if target.type == 'bigquery' else 'delete+insert'),
        unique_key='snapshot_date',
        partition_by=partition_by_day('snapshot_date'),
        cluster_by=['asset_id'],
        partition_expiration_days=var('granular_partition_expiration_days'),
        on_schema_change='fail',
    )
}}

{%- set first_day = recompute_from('snapshot_date') %}

with

asset_snapshots as (

    select * from {{ ref('stg_coincap__assets') }}
    where snapshot_date >= {{ first_day }}

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
