{#- A view on DuckDB. On BigQuery an incremental table partitioned by day: each run reads only the lake
    partitions (`dt`) from the latest day already loaded, replacing those days whole, so marts and tests read
    native storage instead of re-reading every Parquet file of the bucket. -#}
{{
    config(
        materialized=('incremental' if target.type == 'bigquery' else 'view'),
        incremental_strategy='insert_overwrite',
        partition_by=partition_by_day('snapshot_date'),
        cluster_by=['asset_id'],
        on_schema_change='fail',
    )
}}

{%- set first_day = recompute_from('snapshot_date') %}

with

source as (

    select * from {{ source('coincap', 'assets') }}
    -- a constant filter on the hive partition: BigQuery prunes the files it reads (and requires a filter)
    where dt >= {{ first_day }}

),

renamed as (

    select
        id as asset_id,
        snapshot_id,
        snapshot_ts,
        cast(dt as date) as snapshot_date,
        cast(rank as {{ dbt.type_bigint() }}) as asset_rank,
        symbol as asset_symbol,
        name as asset_name,
        cast(priceUsd as {{ type_exact_decimal() }}) as price_usd,
        cast(marketCapUsd as {{ type_exact_decimal() }}) as market_cap_usd,
        cast(volumeUsd24Hr as {{ type_exact_decimal() }}) as volume_usd_24h,
        cast(vwap24Hr as {{ type_exact_decimal() }}) as vwap_24h,
        cast(changePercent24Hr as {{ type_exact_decimal() }}) as change_percent_24h,
        cast(supply as {{ type_exact_decimal() }}) as supply,
        cast(maxSupply as {{ type_exact_decimal() }}) as max_supply,
        explorer as explorer_url,
        tokens as tokens_json,
        api_timestamp,
        extra_fields as extra_fields_json

    from source

),

deduplicated as (

    select
        *,
        row_number() over (
            partition by asset_id, snapshot_id
            order by api_timestamp desc nulls last
        ) as duplicate_rank

    from renamed

),

final as (

    select
        asset_id,
        snapshot_id,
        snapshot_ts,
        snapshot_date,
        asset_rank,
        asset_symbol,
        asset_name,
        price_usd,
        market_cap_usd,
        volume_usd_24h,
        vwap_24h,
        change_percent_24h,
        supply,
        max_supply,
        explorer_url,
        tokens_json,
        api_timestamp,
        extra_fields_json

    from deduplicated
    where duplicate_rank = 1

)

select * from final
