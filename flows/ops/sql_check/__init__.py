"""BigQuery fidelity offline: the SQL BigQuery would run, compiled without credentials and checked by Google's
ZetaSQL analyzer (the front end BigQuery is built on) against a catalog of the tables Terraform and dbt create."""
