{#- BigQuery partitioning for a mart, or none elsewhere: dbt-duckdb rejects a BigQuery-style partition_by.
    Use inside config(): partition_by=partition_by_day('snapshot_date').
    copy_partitions: an insert_overwrite run replaces each recomputed day with a copy job from the temporary
    table (free) instead of a MERGE (billed for the partitions it replaces), and issues no query against the
    target, which matters for tables that require a partition filter. -#}
{% macro partition_by_day(field, data_type='date') -%}
    {%- if target.type == 'bigquery' -%}
        {{ return({'field': field, 'data_type': data_type, 'granularity': 'day', 'copy_partitions': true}) }}
    {%- endif -%}
    {{ return(none) }}
{%- endmacro %}
