{#- One row per asset per UTC day: OHLC and averages from the day's snapshots (int_asset_snapshots_daily), and
    calendar-day window metrics over the previous days (changes, moving averages, volatility).

    Incremental: the latest day already loaded (possibly partial) and every later day are recomputed, reading
    `context_days` more days before them so that every window sees the same rows as a full refresh. DuckDB
    deletes and re-inserts those days; BigQuery overwrites their partitions (insert_overwrite).

    Floats: the average price, VWAP, moving averages, changes and volatility are 64-bit floats (ln, sqrt and
    stddev are float functions); OHLC and the values at close stay exact decimals. Moving averages divide an
    exact decimal sum, and the volatility is rounded to 12 decimals, so both are reproducible run to run. -#}
{{
    config(
        materialized='incremental',
        incremental_strategy=('insert_overwrite' if target.type == 'bigquery' else 'delete+insert'),
        unique_key='price_date',
        partition_by=partition_by_day('price_date'),
        cluster_by=['asset_id'],
        on_schema_change='fail',
    )
}}

{#- The widest window looks back 30 days: the 30-day change, and the 30 daily returns of the volatility (the
    oldest of which needs the close of the day before it). -#}
{%- set context_days = 30 -%}
{%- set first_day = recompute_from('price_date') %}

with

asset_days as (

    select * from {{ ref('int_asset_snapshots_daily') }}
    where snapshot_date >= {{ add_days(first_day, -context_days) }}

),

numbered as (

    select
        *,
        {{ day_number('snapshot_date') }} as day_number,
        {{ dbt.safe_cast('close_price_usd', dbt.type_float()) }} as close_price_float

    from asset_days

),

windowed as (

    select
        *,
        -- the close exactly 1, 7 and 30 calendar days earlier: null when that day has no snapshot
        max(close_price_float) over (
            partition by asset_id order by day_number range between 1 preceding and 1 preceding
        ) as close_1d_earlier,
        max(close_price_float) over (
            partition by asset_id order by day_number range between 7 preceding and 7 preceding
        ) as close_7d_earlier,
        max(close_price_float) over (
            partition by asset_id order by day_number range between 30 preceding and 30 preceding
        ) as close_30d_earlier,
        -- the 7 and 30 calendar days ending today; days without a snapshot are left out, not filled
        sum(close_price_usd) over (
            partition by asset_id order by day_number range between 6 preceding and current row
        ) as close_sum_7d,
        count(close_price_usd) over (
            partition by asset_id order by day_number range between 6 preceding and current row
        ) as close_count_7d,
        sum(close_price_usd) over (
            partition by asset_id order by day_number range between 29 preceding and current row
        ) as close_sum_30d,
        count(close_price_usd) over (
            partition by asset_id order by day_number range between 29 preceding and current row
        ) as close_count_30d

    from numbered

),

with_returns as (

    select
        *,
        case
            when close_price_float > 0 and close_1d_earlier > 0
                then ln(close_price_float / close_1d_earlier)
        end as log_return_1d

    from windowed

),

with_volatility as (

    select
        *,
        -- sample standard deviation of the daily log returns of the 30 days ending today
        stddev_samp(log_return_1d) over (
            partition by asset_id order by day_number range between 29 preceding and current row
        ) as volatility_30d_unrounded,
        count(log_return_1d) over (
            partition by asset_id order by day_number range between 29 preceding and current row
        ) as log_return_count_30d

    from with_returns

),

final as (

    select
        asset_id,
        snapshot_date as price_date,
        snapshot_count,
        first_snapshot_ts,
        last_snapshot_ts,
        open_price_usd,
        high_price_usd,
        low_price_usd,
        close_price_usd,
        avg_price_usd,
        vwap_usd,
        close_market_cap_usd,
        close_volume_usd_24h,
        price_source,
        100 * (close_price_float / nullif(close_1d_earlier, 0) - 1) as pct_change_1d,
        100 * (close_price_float / nullif(close_7d_earlier, 0) - 1) as pct_change_7d,
        100 * (close_price_float / nullif(close_30d_earlier, 0) - 1) as pct_change_30d,
        {{ dbt.safe_cast('close_sum_7d', dbt.type_float()) }} / close_count_7d as moving_avg_close_7d,
        {{ dbt.safe_cast('close_sum_30d', dbt.type_float()) }} / close_count_30d as moving_avg_close_30d,
        log_return_1d,
        log_return_count_30d,
        round(volatility_30d_unrounded, 12) as volatility_30d,
        round(volatility_30d_unrounded * sqrt(365), 12) as volatility_30d_annualised

    from with_volatility
    where snapshot_date >= {{ first_day }}

)

select * from final
