{#- One row per exchange ever returned by /exchanges: its attributes from the latest snapshot that listed it,
    and when it was first and last seen. Markets may name exchanges that are not here (scope settings). -#}

with

exchange_snapshots as (

    select * from {{ ref('stg_coincap__exchanges') }}

),

latest_snapshot as (

    select max(snapshot_ts) as snapshot_ts from exchange_snapshots

),

sightings as (

    select
        exchange_id,
        min(snapshot_ts) as first_seen_at,
        max(snapshot_ts) as last_seen_at,
        count(*) as snapshot_count

    from exchange_snapshots
    group by exchange_id

),

latest_attributes as (

    {{ dedupe('exchange_snapshots', ['exchange_id'], 'snapshot_ts desc') }}

),

final as (

    select
        latest_attributes.exchange_id,
        latest_attributes.exchange_name,
        latest_attributes.exchange_rank,
        latest_attributes.percent_total_volume,
        latest_attributes.volume_usd_24h,
        latest_attributes.trading_pairs,
        latest_attributes.has_socket,
        latest_attributes.exchange_url,
        latest_attributes.updated_at,
        latest_attributes.snapshot_id as latest_snapshot_id,
        sightings.first_seen_at,
        sightings.last_seen_at,
        sightings.snapshot_count,
        sightings.last_seen_at = latest_snapshot.snapshot_ts as is_listed_in_latest_snapshot

    from latest_attributes
    inner join sightings
        on latest_attributes.exchange_id = sightings.exchange_id
    cross join latest_snapshot

)

select * from final
