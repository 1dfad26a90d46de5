{#- A view on DuckDB. On BigQuery an incremental table partitioned by day (the folder's materialization, in
    dbt_project.yml): each run reads only the lake partitions (`dt`) from the latest day already loaded, replacing
    those days whole, so marts and tests read native storage instead of re-reading every Parquet file of the bucket.
-#}
{{
    config(
        incremental_strategy='insert_overwrite',
        partition_by=partition_by_day('snapshot_date'),
        cluster_by=['rate_id'],
        on_schema_change='fail',
    )
}}

{%- set first_day = recompute_from('snapshot_date') %}

with

source as (

    select * from {{ source('coincap', 'rates') }}
    -- a constant filter on the hive partition: BigQuery prunes the files it reads (and requires a filter)
    where dt >= {{ first_day }}

),

renamed as (

    select
        -- Defensive casts: a value no cast can take, an implausible time (ms_to_timestamp) or a USD amount of 1e15
        -- or more (plausible_amount) becomes NULL instead of failing every build; the contract quarantines them, so
        -- only a lake file that bypassed it can carry one. A row whose price is unusable is left out below.
        id as rate_id,
        snapshot_id,
        snapshot_ts,
        cast(dt as date) as snapshot_date,
        symbol as rate_symbol,
        currencySymbol as currency_symbol,
        type as rate_type,
        {{ plausible_amount('rateUsd') }} as rate_usd,
        api_timestamp,
        extra_fields as extra_fields_json

    from source

),

deduplicated as (

    {{ dedupe('renamed', ['rate_id', 'snapshot_id'], 'api_timestamp desc nulls last', where='rate_usd is not null') }}

)

select * from deduplicated
