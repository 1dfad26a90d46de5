# A worker pool (`prefect worker start --pool <name>`) that runs each flow run as a Cloud Run v2 job. The
# provider reads PREFECT_API_URL and PREFECT_API_KEY (Prefect Cloud) from the environment.
resource "prefect_work_pool" "cloud_run" {
  name              = var.name
  type              = "cloud-run-v2"
  description       = var.description
  paused            = var.paused
  concurrency_limit = var.concurrency_limit
  # Normalised so whitespace in the template file never shows up as a plan diff.
  base_job_template = jsonencode(jsondecode(var.base_job_template))
}
