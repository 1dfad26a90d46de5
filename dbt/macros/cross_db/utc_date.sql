{#- The UTC calendar day of a timestamp, whatever time zone the session uses (DuckDB's `timestamptz` casts to
    a date in the session's zone; BigQuery's date() of a TIMESTAMP is already UTC). -#}
{% macro utc_date(timestamp_expr) -%}
    {{ return(adapter.dispatch('utc_date', 'coincap')(timestamp_expr)) }}
{%- endmacro %}

{% macro default__utc_date(timestamp_expr) -%}
    date({{ timestamp_expr }})
{%- endmacro %}

{% macro duckdb__utc_date(timestamp_expr) -%}
    cast(timezone('UTC', {{ timestamp_expr }}) as date)
{%- endmacro %}
