{#- Incremental like fct_asset_snapshots: recompute the latest loaded UTC day and later ones, whole. -#}
{{
    config(
        materialized='incremental',
        incremental_strategy=('insert_overwrite' if target.type == 'bigquery' else 'delete+insert'),
        unique_key='snapshot_date',
        partition_by=partition_by_day('snapshot_date'),
        cluster_by=['rate_id'],
        partition_expiration_days=var('granular_partition_expiration_days'),
        on_schema_change='fail',
    )
}}

{%- set first_day = recompute_from('snapshot_date') %}

with

rates as (

    select * from {{ ref('stg_coincap__rates') }}
    where snapshot_date >= {{ first_day }}

),

final as (

    select
        rate_id,
        snapshot_id,
        snapshot_ts,
        snapshot_date,
        rate_symbol,
        currency_symbol,
        rate_type,
        rate_usd,
        -- how many units one US dollar buys; 64-bit float (a reciprocal is not exact anyway)
        1 / nullif({{ dbt.safe_cast('rate_usd', dbt.type_float()) }}, 0) as units_per_usd,
        api_timestamp

    from rates

)

select * from final
