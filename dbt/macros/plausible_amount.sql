{#- An exact USD amount (a price, market cap, volume or rate) as DECIMAL(38, 18), NULL unless it is a number whose
    magnitude is below 1e15. Defensive, so one bad lake file cannot fail every later build: the contract
    quarantines larger amounts (flows/contracts/columns.py, MAX_USD), so only a file that bypassed it can carry
    one; below 1e15 each, a sum of 100,000 amounts still fits DuckDB's DECIMAL(38, 18) (two 20-digit market caps
    overflow it). tests/test_poisoned_values.py checks the bound equals the contract's. -#}
{% macro plausible_amount(column) -%}
    {%- set amount = dbt.safe_cast(column, type_exact_decimal()) -%}
    case when abs({{ amount }}) < cast(1000000000000000 as {{ type_exact_decimal() }}) then {{ amount }} end
{%- endmacro %}
