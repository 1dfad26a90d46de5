{#- One row per asset: its latest price from the WebSocket stream and from the snapshots, which one is fresher,
    how old each is, and how far apart they are. A view: each query sees the ticks landed so far and measures
    ages against its own clock, with no rebuild. -#}
{{ config(materialized='view') }}

{#- Microseconds since the epoch of a UTC timestamp (TIMESTAMP on BigQuery, TIMESTAMPTZ on DuckDB). Belongs in
    macros/cross_db/ as a dispatched macro; kept here while that folder is being changed. -#}
{%- set epoch_us = 'unix_micros' if target.type == 'bigquery' else 'epoch_us' %}

with

ticks as (

    select * from {{ ref('stg_coincap__prices_stream') }}

),

asset_snapshots as (

    select * from {{ ref('fct_asset_snapshots') }}

),

latest_ticks as (

    {{ dedupe('ticks', ['asset_id'], 'tick_ts desc, connection_id desc, message_seq desc') }}

),

latest_snapshots as (

    {{ dedupe('asset_snapshots', ['asset_id'], 'snapshot_ts desc') }}

),

assets as (

    select asset_id from latest_ticks
    union distinct
    select asset_id from latest_snapshots

),

joined as (

    select
        assets.asset_id,
        latest_ticks.price_usd as stream_price_usd,
        latest_ticks.tick_ts as stream_tick_ts,
        latest_snapshots.price_usd as snapshot_price_usd,
        latest_snapshots.snapshot_ts,
        latest_snapshots.snapshot_id,
        case
            when latest_snapshots.snapshot_ts is null then 'stream'
            when latest_ticks.tick_ts is null then 'snapshot'
            when latest_ticks.tick_ts >= latest_snapshots.snapshot_ts then 'stream'
            else 'snapshot'
        end as fresher_source

    from assets
    left join latest_ticks
        on assets.asset_id = latest_ticks.asset_id
    left join latest_snapshots
        on assets.asset_id = latest_snapshots.asset_id

),

final as (

    select
        asset_id,
        fresher_source,
        case when fresher_source = 'stream' then stream_price_usd else snapshot_price_usd end as latest_price_usd,
        case when fresher_source = 'stream' then stream_tick_ts else snapshot_ts end as latest_price_at,
        (
            {{ epoch_us }}(current_timestamp)
            - {{ epoch_us }}(case when fresher_source = 'stream' then stream_tick_ts else snapshot_ts end)
        ) / 1000000.0 as latest_price_age_seconds,
        stream_price_usd,
        stream_tick_ts,
        ({{ epoch_us }}(current_timestamp) - {{ epoch_us }}(stream_tick_ts)) / 1000000.0 as stream_age_seconds,
        snapshot_price_usd,
        snapshot_ts,
        snapshot_id,
        ({{ epoch_us }}(current_timestamp) - {{ epoch_us }}(snapshot_ts)) / 1000000.0 as snapshot_age_seconds,
        100 * cast(stream_price_usd - snapshot_price_usd as {{ dbt.type_float() }})
        / cast(nullif(snapshot_price_usd, 0) as {{ dbt.type_float() }}) as stream_vs_snapshot_percent

    from joined

)

select * from final
