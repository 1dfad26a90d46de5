{#- The lake's DECIMAL(38, 18): CoinCap's up-to-18-decimal numbers, kept exactly.
    BigQuery reads a Parquet DECIMAL(38, 18) as BIGNUMERIC (NUMERIC allows only 9 decimals). -#}
{% macro type_exact_decimal() -%}
    {{ return(adapter.dispatch('type_exact_decimal', 'coincap')()) }}
{%- endmacro %}

{% macro default__type_exact_decimal() -%}
    decimal(38, 18)
{%- endmacro %}

{% macro bigquery__type_exact_decimal() -%}
    bignumeric(38, 18)
{%- endmacro %}
