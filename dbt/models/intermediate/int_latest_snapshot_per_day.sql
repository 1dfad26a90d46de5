{#- One row per snapshot dataset per UTC day: the day's latest snapshot (the latest start, then the highest id).
    The reports show each day as of its latest snapshot: rpt_market_overview_daily (assets), rpt_exchange_daily
    (exchanges and markets), rpt_market_pairs_daily (markets). A 0-row snapshot leaves no row in staging, so it is
    never a day's latest. A view: readers filter on snapshot_date, which reaches the staging tables' partitions. -#}

{%- set datasets = {
    'assets': 'stg_coincap__assets',
    'exchanges': 'stg_coincap__exchanges',
    'markets': 'stg_coincap__markets',
} %}

with

snapshots as (

    {%- for dataset, model in datasets.items() %}

        select
            '{{ dataset }}' as dataset,
            snapshot_date,
            snapshot_id,
            max(snapshot_ts) as snapshot_ts

        from {{ ref(model) }}
        group by snapshot_date, snapshot_id

        {%- if not loop.last %}

            union all

        {%- endif %}

    {%- endfor %}

),

latest as (

    {{ dedupe('snapshots', ['dataset', 'snapshot_date'], 'snapshot_ts desc, snapshot_id desc') }}

)

select * from latest
