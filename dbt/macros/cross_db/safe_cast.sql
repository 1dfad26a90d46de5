{#- dbt's default safe_cast on DuckDB is a plain CAST that errors; try_cast returns null like BigQuery's
    SAFE_CAST. -#}
{% macro duckdb__safe_cast(field, type) -%}
    try_cast({{ field }} as {{ type }})
{%- endmacro %}
