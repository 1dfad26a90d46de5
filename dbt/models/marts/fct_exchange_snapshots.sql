{#- Incremental like fct_asset_snapshots: recompute the latest loaded UTC day and later ones, whole. -#}
{{
    config(
        materialized='incremental',
        incremental_strategy=('insert_overwrite' if target.type == 'bigquery' else 'delete+insert'),
        unique_key='snapshot_date',
        partition_by=partition_by_day('snapshot_date'),
        cluster_by=['exchange_id'],
        partition_expiration_days=var('granular_partition_expiration_days'),
        on_schema_change='fail',
    )
}}

{%- set first_day = recompute_from('snapshot_date') %}

with

exchanges as (

    select * from {{ ref('stg_coincap__exchanges') }}
    where snapshot_date >= {{ first_day }}

),

final as (

    select
        exchange_id,
        snapshot_id,
        snapshot_ts,
        snapshot_date,
        exchange_name,
        exchange_rank,
        percent_total_volume,
        volume_usd_24h,
        trading_pairs,
        has_socket,
        exchange_url,
        updated_at,
        api_timestamp

    from exchanges

)

select * from final
