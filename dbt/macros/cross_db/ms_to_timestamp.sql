{#- Unix milliseconds (BIGINT) to a UTC timestamp: TIMESTAMP WITH TIME ZONE on DuckDB, TIMESTAMP on BigQuery. -#}
{% macro ms_to_timestamp(ms) -%}
    {{ return(adapter.dispatch('ms_to_timestamp', 'coincap')(ms)) }}
{%- endmacro %}

{% macro default__ms_to_timestamp(ms) -%}
    timestamp_millis({{ ms }})
{%- endmacro %}

{% macro duckdb__ms_to_timestamp(ms) -%}
    (epoch_ms({{ ms }}) at time zone 'UTC')
{%- endmacro %}
