{#- BigQuery partitioning for a mart, or none elsewhere: dbt-duckdb rejects a BigQuery-style partition_by.
    Use inside config(): partition_by=partition_by_day('snapshot_date'). -#}
{% macro partition_by_day(field, data_type='date') -%}
    {%- if target.type == 'bigquery' -%}
        {{ return({'field': field, 'data_type': data_type, 'granularity': 'day'}) }}
    {%- endif -%}
    {{ return(none) }}
{%- endmacro %}
