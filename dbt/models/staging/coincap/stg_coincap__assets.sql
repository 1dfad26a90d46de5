with

source as (

    select * from {{ source('coincap', 'assets') }}

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
