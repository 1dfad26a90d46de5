{#- The latest day with rows in an incremental model's table (1970-01-01 when empty), as a SQL DATE expression. -#}
{% macro latest_loaded_day(relation, day_column) -%}
    {{ return(adapter.dispatch('latest_loaded_day', 'coincap')(relation, day_column)) }}
{%- endmacro %}

{% macro default__latest_loaded_day(relation, day_column) -%}
    (select coalesce(max(loaded.{{ day_column }}), cast('1970-01-01' as date)) from {{ relation }} as loaded)
{%- endmacro %}

{#- BigQuery: a constant, read before the model's query from the table's partition metadata (billed at the 10 MB
    minimum). BigQuery prunes partitions only on constant filters: the subquery above would make every run read
    all of the model's input, and max() over the column would bill the whole column (and fail on a table that
    requires a partition filter). The column must be the table's day partition. -#}
{% macro bigquery__latest_loaded_day(relation, day_column) -%}
    {%- set partition_by = config.get('partition_by') or {} -%}
    {%- if partition_by.get('field') != day_column or partition_by.get('granularity', 'day') != 'day' -%}
        {{ exceptions.raise_compiler_error(
            "latest_loaded_day: " ~ relation ~ " must be partitioned by day on " ~ day_column) }}
    {%- endif -%}
    {%- set query -%}
        select format_date('%F', parse_date('%Y%m%d', max(partition_id))) as latest_day
        from `{{ relation.database }}`.`{{ relation.schema }}`.INFORMATION_SCHEMA.PARTITIONS
        where
            table_name = '{{ relation.identifier }}'
            and regexp_contains(partition_id, r'^[0-9]{8}$')
            and total_rows > 0
    {%- endset -%}
    {%- set latest = run_query(query).columns[0].values()[0] -%}
    {#- agate may hand back text, a date or a datetime: keep the day -#}
    {%- set day = (latest | string)[:10] if latest else '1970-01-01' -%}
    {{ return("cast('" ~ day ~ "' as date)") }}
{%- endmacro %}
