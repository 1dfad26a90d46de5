{#
    Models land in schemas named after their layer (`staging`, `marts`), not `<target schema>_<layer>`, so
    analysts query `marts.fct_asset_daily` locally. On BigQuery the same names become datasets, prefixed by
    PIPELINE_SCHEMA_PREFIX (e.g. `coincap_marts`) so several projects can share a GCP project.
#}
{% macro generate_schema_name(custom_schema_name, node) -%}
    {%- if custom_schema_name is none -%}
        {{ target.schema }}
    {%- else -%}
        {{ env_var('PIPELINE_SCHEMA_PREFIX', '') }}{{ custom_schema_name | trim }}
    {%- endif -%}
{%- endmacro %}
