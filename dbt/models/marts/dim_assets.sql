{#- One row per asset ever seen: its attributes from the latest snapshot that listed it, and when it was first
    and last seen. Rebuilt in full on every run (a small table: one row per asset). -#}

with

asset_snapshots as (

    select * from {{ ref('stg_coincap__assets') }}

),

latest_snapshot as (

    select max(snapshot_ts) as snapshot_ts from asset_snapshots

),

sightings as (

    select
        asset_id,
        min(snapshot_ts) as first_seen_at,
        max(snapshot_ts) as last_seen_at,
        count(*) as snapshot_count

    from asset_snapshots
    group by asset_id

),

latest_attributes as (

    {{ dedupe('asset_snapshots', ['asset_id'], 'snapshot_ts desc') }}

),

final as (

    select
        latest_attributes.asset_id,
        latest_attributes.asset_symbol,
        latest_attributes.asset_name,
        latest_attributes.asset_rank,
        latest_attributes.supply,
        latest_attributes.max_supply,
        latest_attributes.explorer_url,
        latest_attributes.tokens_json,
        latest_attributes.snapshot_id as latest_snapshot_id,
        sightings.first_seen_at,
        sightings.last_seen_at,
        sightings.snapshot_count,
        sightings.last_seen_at = latest_snapshot.snapshot_ts as is_listed_in_latest_snapshot

    from latest_attributes
    inner join sightings
        on latest_attributes.asset_id = sightings.asset_id
    cross join latest_snapshot

)

select * from final
