{#- A view on DuckDB. On BigQuery an incremental table partitioned by day (the folder's materialization, in
    dbt_project.yml): each run reads only the lake partitions (`dt`) from the latest day already loaded, replacing
    those days whole, so marts and tests read native storage instead of re-reading every Parquet file of the bucket.
-#}
{{
    config(
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
        -- Defensive casts: a value no cast can take, an implausible time (ms_to_timestamp) or a USD amount of 1e15
        -- or more (plausible_amount) becomes NULL instead of failing every build; the contract quarantines them, so
        -- only a lake file that bypassed it can carry one. A row whose price is unusable is left out below.
        id as asset_id,
        snapshot_id,
        snapshot_ts,
        cast(dt as date) as snapshot_date,
        {{ dbt.safe_cast('rank', dbt.type_bigint()) }} as asset_rank,
        symbol as asset_symbol,
        name as asset_name,
        {{ plausible_amount('priceUsd') }} as price_usd,
        {{ plausible_amount('marketCapUsd') }} as market_cap_usd,
        {{ plausible_amount('volumeUsd24Hr') }} as volume_usd_24h,
        {{ plausible_amount('vwap24Hr') }} as vwap_24h,
        {{ dbt.safe_cast('changePercent24Hr', type_exact_decimal()) }} as change_percent_24h,
        {{ dbt.safe_cast('supply', type_exact_decimal()) }} as supply,
        {{ dbt.safe_cast('maxSupply', type_exact_decimal()) }} as max_supply,
        explorer as explorer_url,
        tokens as tokens_json,
        api_timestamp,
        extra_fields as extra_fields_json

    from source

),

deduplicated as (

    {{ dedupe('renamed', ['asset_id', 'snapshot_id'], 'api_timestamp desc nulls last', where='price_usd is not null') }}

)

select * from deduplicated
