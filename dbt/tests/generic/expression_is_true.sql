{#- Fails for every row where the SQL expression is false. With column_name (the test set on a column), the
    expression is appended to the column: `expression: ">= 0"`. Rows where it is null pass, like a CHECK. -#}
{% test expression_is_true(model, expression, column_name=none) %}

{%- set check = (column_name ~ ' ' ~ expression) if column_name is not none else expression %}

with

failing as (

    select *
    from {{ model }}
    where not ({{ check }})

)

select * from failing

{% endtest %}
