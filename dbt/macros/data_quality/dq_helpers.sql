{#- Small pieces the data-quality tests (tests/generic/dq_*.sql) share. Every such test returns one row per
    failing item with two columns the pipeline reads from its stored failures (flows/quality/dbt_results.py):
    `failing_key`, a short text naming the item and what is wrong (e.g. `dogecoin -1`), and `observed`, the
    item's measure as a float. -#}

{#- A text key from one column or several (joined with '/'), e.g. `kraken/bitcoin/tether`. -#}
{%- macro dq_key(columns) -%}
    {%- set columns = [columns] if columns is string else columns -%}
    {%- if columns | length == 1 -%}
        {{ dq_text(columns[0]) }}
    {%- else -%}
        concat({% for c in columns %}{{ dq_text(c) }}{% if not loop.last %}, '/', {% endif %}{% endfor %})
    {%- endif -%}
{%- endmacro -%}

{%- macro dq_text(expr) -%}
    cast({{ expr }} as {{ dbt.type_string() }})
{%- endmacro -%}

{%- macro dq_float(expr) -%}
    cast({{ expr }} as {{ dbt.type_float() }})
{%- endmacro -%}

{#- A number as short text for a failing key, rounded to `digits` decimals. -#}
{%- macro dq_num(expr, digits=2) -%}
    {{ dq_text('round(' ~ dq_float(expr) ~ ', ' ~ digits ~ ')') }}
{%- endmacro -%}

{#- Hours from `earlier` to `later` (timestamps), as a float. -#}
{%- macro dq_hours_between(later, earlier) -%}
    {{ return(adapter.dispatch('dq_hours_between', 'coincap')(later, earlier)) }}
{%- endmacro -%}

{%- macro default__dq_hours_between(later, earlier) -%}
    (timestamp_diff({{ later }}, {{ earlier }}, second) / 3600.0)
{%- endmacro -%}

{%- macro duckdb__dq_hours_between(later, earlier) -%}
    (date_diff('second', {{ earlier }}, {{ later }}) / 3600.0)
{%- endmacro -%}

{#- The median of a float expression, as an aggregate (BigQuery's is approximate, like its percentiles). -#}
{%- macro dq_median(expr) -%}
    {{ return(adapter.dispatch('dq_median', 'coincap')(expr)) }}
{%- endmacro -%}

{%- macro default__dq_median(expr) -%}
    approx_quantiles({{ expr }}, 2)[offset(1)]
{%- endmacro -%}

{%- macro duckdb__dq_median(expr) -%}
    median({{ expr }})
{%- endmacro -%}

{#- The config every data-quality test shares: severity warn (a trip never stops the build: the data is landed and
    modeled, and flagged), its failing rows stored in the ops schema for the pipeline to read (a few keys and the
    observed value land in ops.dq_results), and what the pipeline needs to know about the test in `meta`:
    `dq_observed`, how the failing rows' `observed` values add up to the check's (min, max, sum or count), and
    `dq_threshold`, the argument it was compared with. A test's yml may set `meta: {dq_severity: warn}`: a trip is
    then a warning of the quality run rather than a failure (flows/quality/dbt_results.py). -#}
{%- macro dq_config(observed, threshold=none) -%}
    {{ config(
        severity='warn',
        store_failures=true,
        schema='ops',
        meta={'dq_observed': observed, 'dq_threshold': threshold},
    ) }}
{%- endmacro -%}
