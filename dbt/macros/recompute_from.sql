{#- The first day an incremental run recomputes, as a SQL DATE expression: the latest day already loaded in `this`
    (a day that was partial is recomputed whole), or 1970-01-01 on a first build, a full refresh or an empty table.
    Use: {%- set first_day = recompute_from('snapshot_date') %} ... where snapshot_date >= {{ first_day }}
    On BigQuery it is a constant read from partition metadata before the query runs (see latest_loaded_day). -#}
{% macro recompute_from(day_column) -%}
    {#- a unit test of a view has no `this` at all -#}
    {%- if execute and this is not none and is_incremental() -%}
        {{ return(latest_loaded_day(this, day_column)) }}
    {%- endif -%}
    {{ return("cast('1970-01-01' as date)") }}
{%- endmacro %}
