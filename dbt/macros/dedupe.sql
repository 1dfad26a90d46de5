{#- One row per `partition_by` key of `relation` (a ref, a source or a CTE name): the first by `order_by`, among the
    rows that pass `where`. A whole SELECT, for a CTE:

        deduplicated as (
            {{ dedupe('renamed', ['asset_id', 'snapshot_id'], 'api_timestamp desc nulls last', 'price_usd is not null') }}
        )

    QUALIFY, so the output has exactly the input's columns (no rank column to drop, which DuckDB spells
    `* exclude` and BigQuery `* except`). Both engines accept it as written; the WHERE is always there because
    BigQuery has long documented QUALIFY as needing a WHERE, GROUP BY or HAVING beside it. The WHERE applies
    before the ranking, so a row it drops never hides a duplicate. -#}
{% macro dedupe(relation, partition_by, order_by, where='true') -%}
    {%- set keys = partition_by if partition_by is string else partition_by | join(', ') -%}
    select * from {{ relation }}
    where {{ where }}
    qualify row_number() over (partition by {{ keys }} order by {{ order_by }}) = 1
{%- endmacro %}
