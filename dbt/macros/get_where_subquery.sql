{#- BigQuery: data tests of a day-partitioned model read only its last `test_recent_days` days (and a test's own
    `where`, if any). Older partitions were tested when they were built; re-reading the whole snapshot facts on
    every run would cost more than building them, and fct_market_snapshots requires a partition filter anyway.
    DuckDB keeps dbt's default: tests read everything. -#}
{% macro bigquery__get_where_subquery(relation) -%}
    {%- set where = config.get('where', '') -%}
    {%- set found = namespace(partition_by=none) -%}
    {%- if execute -%}
        {%- for node in graph.nodes.values() -%}
            {%- if node.resource_type == 'model' and node.schema == relation.schema
                and node.alias == relation.identifier -%}
                {%- set found.partition_by = node.config.get('partition_by') -%}
            {%- endif -%}
        {%- endfor -%}
    {%- endif -%}
    {%- set partition_by = found.partition_by -%}
    {%- if partition_by and partition_by.get('data_type', 'date') in ('date', 'timestamp') -%}
        {%- set kind = partition_by.get('data_type', 'date') -%}
        {%- set recent -%}
            {{ partition_by.field }} >= {{ kind }}_sub(current_{{ kind }}(), interval {{ var('test_recent_days') }} day)
        {%- endset -%}
        {%- set where = recent if not where else '(' ~ where ~ ') and ' ~ recent -%}
    {%- endif -%}
    {%- if where -%}
        {{ return('(select * from ' ~ relation ~ ' where ' ~ where ~ ') dbt_subquery') }}
    {%- endif -%}
    {{ return(relation) }}
{%- endmacro %}
