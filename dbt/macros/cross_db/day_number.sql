{#- Days since 1970-01-01 as an integer, so calendar-day windows can use RANGE frames on both engines
    (BigQuery only accepts numeric ORDER BY keys in RANGE frames). -#}
{% macro day_number(date_expr) -%}
    {{ return(adapter.dispatch('day_number', 'coincap')(date_expr)) }}
{%- endmacro %}

{% macro default__day_number(date_expr) -%}
    unix_date({{ date_expr }})
{%- endmacro %}

{% macro duckdb__day_number(date_expr) -%}
    date_diff('day', date '1970-01-01', {{ date_expr }})
{%- endmacro %}
