{#- A view on DuckDB. On BigQuery an incremental table partitioned by day (the folder's materialization, in
    dbt_project.yml): each run reads only the lake partitions (`dt`) from the latest day already loaded, replacing
    those days whole, so marts and tests read native storage instead of re-reading every Parquet file of the bucket.
-#}
{{
    config(
        incremental_strategy='insert_overwrite',
        partition_by=partition_by_day('snapshot_date'),
        cluster_by=['exchange_id', 'base_asset_id'],
        on_schema_change='fail',
    )
}}

{%- set first_day = recompute_from('snapshot_date') %}

with

source as (

    select * from {{ source('coincap', 'markets') }}
    -- a constant filter on the hive partition: BigQuery prunes the files it reads (and requires a filter)
    where dt >= {{ first_day }}

),

renamed as (

    select
        -- Defensive casts: a value no cast can take, an implausible time (ms_to_timestamp) or a USD amount of 1e15
        -- or more (plausible_amount) becomes NULL instead of failing every build; the contract quarantines them, so
        -- only a lake file that bypassed it can carry one. A row whose price is unusable is left out below.
        exchangeId as exchange_id,
        baseId as base_asset_id,
        quoteId as quote_asset_id,
        snapshot_id,
        snapshot_ts,
        cast(dt as date) as snapshot_date,
        baseSymbol as base_symbol,
        quoteSymbol as quote_symbol,
        {{ dbt.safe_cast('rank', dbt.type_bigint()) }} as market_rank,
        {{ dbt.safe_cast('priceQuote', type_exact_decimal()) }} as price_quote,
        {{ plausible_amount('priceUsd') }} as price_usd,
        {{ plausible_amount('volumeUsd24Hr') }} as volume_usd_24h,
        {{ dbt.safe_cast('percentExchangeVolume', type_exact_decimal()) }} as percent_exchange_volume,
        {{ dbt.safe_cast('tradesCount24Hr', dbt.type_bigint()) }} as trades_count_24h,
        -- CoinCap sends 0 when it does not know the time of the last update
        {{ ms_to_timestamp('nullif(updated, 0)') }} as updated_at,
        api_timestamp,
        extra_fields as extra_fields_json

    from source

),

deduplicated as (

    {{ dedupe(
        'renamed',
        ['exchange_id', 'base_asset_id', 'quote_asset_id', 'snapshot_id'],
        'api_timestamp desc nulls last',
        where='price_usd is not null',
    ) }}

)

select * from deduplicated
