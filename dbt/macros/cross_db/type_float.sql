{#- dbt's default type_float() is a 32-bit FLOAT on DuckDB; BigQuery's FLOAT64 is 64-bit. Match it. -#}
{% macro duckdb__type_float() -%}
    double
{%- endmacro %}
