"""Where the pipeline meets Prefect: the one place besides the flow modules, the CLI and the lab that imports it.

- `runs`: which failures a task retries, the id and UI address of the flow run code runs in;
- `alerting`: the `on_failure`/`on_crashed` hook, and alerts sent with their Prefect event (for automations);
- `automations`: `deployments/automations.yaml` applied through the Prefect client, with its notification block;
- `logs`: logging set up for a Prefect process (flow and task run ids in JSON lines);
- `artifacts`: the `snapshot-summary` artifact;
- `preflight`: the readers preflight's work-pool and results-block checks ask Prefect's API with.

What these build on stays Prefect-free in `flows.ops`: alert messages and webhook delivery, redaction and log
formatting, the run report's markdown, preflight's checks.
"""
