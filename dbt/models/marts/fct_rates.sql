{#- Incremental like fct_asset_snapshots: re-read from the latest snapshot already loaded, replace whole
    snapshots on DuckDB, merge on the grain on BigQuery. -#}
{{
    config(
        materialized='incremental',
        incremental_strategy=('merge' if target.type == 'bigquery' else 'delete+insert'),
        unique_key=(['rate_id', 'snapshot_id'] if target.type == 'bigquery' else 'snapshot_id'),
        partition_by=partition_by_day('snapshot_date'),
        cluster_by=['rate_id'],
        on_schema_change='fail',
    )
}}

with

rates as (

    select * from {{ ref('stg_coincap__rates') }}

    {% if is_incremental() %}
        where snapshot_ts >= (
            select coalesce(max(loaded.snapshot_ts), cast('1970-01-01' as {{ dbt.type_timestamp() }}))
            from {{ this }} as loaded
        )
    {% endif %}

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
