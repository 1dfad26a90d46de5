{#- A DATE plus a whole number of days, still a DATE (dbt.dateadd returns TIMESTAMP on DuckDB and DATETIME
    on BigQuery, neither of which compares cleanly with a DATE column on both engines). -#}
{% macro add_days(date_expr, days) -%}
    {{ return(adapter.dispatch('add_days', 'coincap')(date_expr, days)) }}
{%- endmacro %}

{% macro default__add_days(date_expr, days) -%}
    date_add({{ date_expr }}, interval {{ days }} day)
{%- endmacro %}

{% macro duckdb__add_days(date_expr, days) -%}
    ({{ date_expr }} + cast({{ days }} as integer))
{%- endmacro %}
