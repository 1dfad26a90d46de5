{#- The exchanges page: one row per exchange per UTC day, from the day's latest exchanges snapshot (rank, 24-hour
    volume and its share of the volume of every exchange in that snapshot, trading pairs) and the day's latest
    markets snapshot (how many markets were seen for the exchange and their 24-hour volume).

    Markets follow their own scope settings, so an exchange can appear in one snapshot and not the other: an
    exchange seen only in markets has no rank, volume or share, and its id stands in for its name; markets_count
    is 0 for a listed exchange without markets that day, and null on a day without any markets snapshot.
    On BigQuery partitioned by report_date, clustered by exchange_id. Incremental like the facts. -#}
{{
    config(
        materialized='incremental',
        incremental_strategy=('insert_overwrite' if target.type == 'bigquery' else 'delete+insert'),
        unique_key='report_date',
        partition_by=partition_by_day('report_date'),
        cluster_by=['exchange_id'],
        on_schema_change='fail',
    )
}}

{%- set first_day = recompute_from('report_date') %}

with

latest_snapshots as (

    select
        dataset,
        snapshot_date,
        snapshot_id

    from {{ ref('int_latest_snapshot_per_day') }}
    where dataset in ('exchanges', 'markets') and snapshot_date >= {{ first_day }}

),

exchange_snapshots as (

    select * from {{ ref('fct_exchange_snapshots') }}
    where snapshot_date >= {{ first_day }}

),

market_snapshots as (

    select * from {{ ref('fct_market_snapshots') }}
    where snapshot_date >= {{ first_day }}

),

latest_exchanges as (

    select
        exchange_snapshots.*,
        -- an exact decimal sum, so the share does not depend on the order rows are added in
        {{ dbt.safe_cast(
            'sum(exchange_snapshots.volume_usd_24h) over (partition by exchange_snapshots.snapshot_id)',
            dbt.type_float()
        ) }} as snapshot_volume_usd_24h

    from exchange_snapshots
    inner join latest_snapshots
        on
            latest_snapshots.dataset = 'exchanges'
            and exchange_snapshots.snapshot_date = latest_snapshots.snapshot_date
            and exchange_snapshots.snapshot_id = latest_snapshots.snapshot_id

),

markets_by_exchange as (

    select
        market_snapshots.snapshot_date,
        market_snapshots.snapshot_id,
        market_snapshots.exchange_id,
        count(*) as markets_count,
        {{ dbt.safe_cast('sum(market_snapshots.volume_usd_24h)', dbt.type_float()) }} as markets_volume_usd_24h

    from market_snapshots
    inner join latest_snapshots
        on
            latest_snapshots.dataset = 'markets'
            and market_snapshots.snapshot_date = latest_snapshots.snapshot_date
            and market_snapshots.snapshot_id = latest_snapshots.snapshot_id
    group by market_snapshots.snapshot_date, market_snapshots.snapshot_id, market_snapshots.exchange_id

),

latest_market_snapshots as (

    -- the days with a markets snapshot (one that has rows: a 0-row snapshot is no day's latest)
    select distinct
        snapshot_date,
        snapshot_id

    from markets_by_exchange

),

exchange_days as (

    select
        latest_exchanges.snapshot_id,
        latest_exchanges.exchange_name,
        latest_exchanges.exchange_rank,
        latest_exchanges.volume_usd_24h,
        latest_exchanges.snapshot_volume_usd_24h,
        latest_exchanges.trading_pairs,
        markets_by_exchange.markets_count,
        markets_by_exchange.markets_volume_usd_24h,
        coalesce(latest_exchanges.snapshot_date, markets_by_exchange.snapshot_date) as report_date,
        coalesce(latest_exchanges.exchange_id, markets_by_exchange.exchange_id) as exchange_id

    from latest_exchanges
    full outer join markets_by_exchange
        on
            latest_exchanges.snapshot_date = markets_by_exchange.snapshot_date
            and latest_exchanges.exchange_id = markets_by_exchange.exchange_id

),

final as (

    select
        exchange_days.report_date,
        exchange_days.exchange_id,
        exchange_days.snapshot_id,
        latest_market_snapshots.snapshot_id as markets_snapshot_id,
        coalesce(exchange_days.exchange_name, exchange_days.exchange_id) as exchange_name,
        exchange_days.exchange_rank,
        {{ dbt.safe_cast('exchange_days.volume_usd_24h', dbt.type_float()) }} as volume_usd_24h,
        100 * {{ dbt.safe_cast('exchange_days.volume_usd_24h', dbt.type_float()) }}
        / nullif(exchange_days.snapshot_volume_usd_24h, 0) as volume_share_pct,
        {{ dbt.safe_cast('exchange_days.trading_pairs', dbt.type_float()) }} as trading_pairs,
        -- 0 when the day's markets snapshot has none for the exchange; null when the day has no markets snapshot
        {{ dbt.safe_cast(
            'case when latest_market_snapshots.snapshot_id is not null'
            ~ ' then coalesce(exchange_days.markets_count, 0) end',
            dbt.type_float()
        ) }} as markets_count,
        case
            when latest_market_snapshots.snapshot_id is not null
                then coalesce(exchange_days.markets_volume_usd_24h, 0)
        end as markets_volume_usd_24h,
        exchange_days.report_date = max(exchange_days.report_date) over () as is_latest_day

    from exchange_days
    left join latest_market_snapshots
        on exchange_days.report_date = latest_market_snapshots.snapshot_date

)

select * from final
