with

source as (

    select * from {{ source('coincap', 'rates') }}

),

renamed as (

    select
        id as rate_id,
        snapshot_id,
        snapshot_ts,
        cast(dt as date) as snapshot_date,
        symbol as rate_symbol,
        currencySymbol as currency_symbol,
        type as rate_type,
        cast(rateUsd as {{ type_exact_decimal() }}) as rate_usd,
        api_timestamp,
        extra_fields as extra_fields_json

    from source

),

deduplicated as (

    select
        *,
        row_number() over (
            partition by rate_id, snapshot_id
            order by api_timestamp desc nulls last
        ) as duplicate_rank

    from renamed

),

final as (

    select
        rate_id,
        snapshot_id,
        snapshot_ts,
        snapshot_date,
        rate_symbol,
        currency_symbol,
        rate_type,
        rate_usd,
        api_timestamp,
        extra_fields_json

    from deduplicated
    where duplicate_rank = 1

)

select * from final
