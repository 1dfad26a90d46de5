variable "template_file" {
  type        = string
  description = "Path of the Cloud Run v2 base job template (deployments/cloud-run-v2-job-template.json): job_configuration plus a variables schema. It may hold $${name} placeholders filled from template_vars."

  validation {
    condition     = fileexists(var.template_file)
    error_message = "template_file does not exist: set base_job_template_file, or write deployments/cloud-run-v2-job-template.json (`prefect work-pool get-default-base-job-template --type cloud-run-v2`)."
  }
}

variable "template_vars" {
  type        = map(string)
  description = "Values of the template's $${name} placeholders, e.g. { region = \"us-central1\" }; every placeholder must have one."
  default     = {}
}

variable "project_id" {
  type        = string
  description = "The Google Cloud project the worker creates the Cloud Run jobs in (the default of the template's credentials.project), e.g. example-project."

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{4,28}[a-z0-9]$", var.project_id))
    error_message = "A project id is 6-30 lowercase letters, digits and dashes, starting with a letter."
  }
}

variable "prefect_api_key_secret" {
  type        = string
  description = "Secret Manager secret id whose latest version is the flow runs' PREFECT_API_KEY (the template's prefect_api_key_secret); null leaves the key to the worker, which passes it in plain text (only for a server without auth)."
  default     = null
  nullable    = true
}

variable "image" {
  type        = string
  description = "Default image of the flow runs, e.g. us-central1-docker.pkg.dev/example-project/coincap-pipeline/coincap-pipeline:latest."
}

variable "region" {
  type        = string
  description = "Region the Cloud Run jobs run in."
}

variable "service_account_email" {
  type        = string
  description = "Email of the service account the jobs run as."
}

variable "cpu" {
  type        = string
  description = "CPU of each job, in Cloud Run units (\"1\", \"2\", \"1000m\")."
  default     = "1"

  validation {
    condition     = can(regex("^([0-9]+m|[1-9][0-9]*)$", var.cpu))
    error_message = "cpu is a whole number of CPUs (\"1\") or millicpus (\"1000m\")."
  }
}

variable "memory" {
  type        = string
  description = "Memory of each job; Cloud Run's 512Mi default is too small for a full markets snapshot."
  default     = "2Gi"

  validation {
    condition     = can(regex("^[0-9]+(G|Gi|M|Mi)$", var.memory))
    error_message = "memory is a number with a unit G, Gi, M or Mi, e.g. 2Gi."
  }
}

variable "timeout_seconds" {
  type        = number
  description = "How long a job may run before Cloud Run stops it; Cloud Run's 600 s default cuts a full snapshot short."
  default     = 3600

  validation {
    condition     = var.timeout_seconds >= 1 && var.timeout_seconds <= 604800
    error_message = "timeout_seconds is between 1 and 604800 (7 days)."
  }
}

variable "env" {
  type        = map(string)
  description = "Plain environment variables of every flow run (project, bucket, datasets); no secrets here."
  default     = {}
}

variable "secret_env" {
  type        = map(string)
  description = "Environment variables read from Secret Manager at start, as { VARIABLE = secret id }; the latest version is used."
  default     = {}
}
