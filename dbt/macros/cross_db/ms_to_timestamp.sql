{#- Unix milliseconds (BIGINT) to a UTC timestamp: TIMESTAMP WITH TIME ZONE on DuckDB, TIMESTAMP on BigQuery.
    Defensive, so one bad lake file cannot fail every later build: NULL for a value that is no integer, or lies
    outside [2009-01-01, 2100-01-01). The contract quarantines such values (flows/contracts/columns.py: from
    EPOCH_MS_MIN to now + 1 day); a file that bypassed it could carry 2**63 - 1, which both engines refuse to
    convert (DuckDB fails the whole query), or seconds, or year 9999. Fixed bounds keep a model deterministic;
    tests/test_poisoned_values.py checks the lower one equals the contract's.
    The guard sits inside the conversion, never around it, and clamps too: DuckDB evaluates a CASE branch's
    function over the whole dictionary of a dictionary-encoded Parquet column (rows the CASE left out included;
    try() then nulls every row), and derives a filter's statistics from the column's min and max through the
    CASE, so epoch_ms must only ever see values, and bounds, already known to be in range. -#}
{% macro ms_to_timestamp(ms) -%}
    {{ return(adapter.dispatch('ms_to_timestamp', 'coincap')(ms)) }}
{%- endmacro %}

{#- The milliseconds when plausible, else NULL (the clamp changes no value: it bounds the statistics) -#}
{% macro plausible_ms(ms) -%}
    {%- set safe_ms = dbt.safe_cast(ms, dbt.type_bigint()) -%}
    case
        when {{ safe_ms }} >= 1230768000000 and {{ safe_ms }} < 4102444800000
            then least(greatest({{ safe_ms }}, 1230768000000), 4102444799999)
    end
{%- endmacro %}

{% macro default__ms_to_timestamp(ms) -%}
    timestamp_millis({{ plausible_ms(ms) }})
{%- endmacro %}

{% macro duckdb__ms_to_timestamp(ms) -%}
    (epoch_ms({{ plausible_ms(ms) }}) at time zone 'UTC')
{%- endmacro %}
