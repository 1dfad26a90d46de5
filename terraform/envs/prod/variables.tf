# ---------------------------------------------------------------------------------------------- where
variable "project_id" {
  type        = string
  description = "The Google Cloud project to deploy into (GCP_PROJECT_ID), e.g. example-project."

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{4,28}[a-z0-9]$", var.project_id))
    error_message = "A project id is 6-30 lowercase letters, digits and dashes, starting with a letter."
  }
}

variable "region" {
  type        = string
  description = "Region of the Cloud Run jobs, the image repository and (unless bucket_location is set) the lake bucket."
  default     = "us-central1"

  validation {
    condition     = can(regex("^[a-z]+-[a-z]+[0-9]+$", var.region))
    error_message = "region is a Google Cloud region such as us-central1."
  }
}

variable "bq_location" {
  type        = string
  description = "BigQuery location of the datasets (BQ_LOCATION): a multi-region (US, EU) or a region. It must contain the bucket's location."
  default     = "US"
}

variable "bucket_location" {
  type        = string
  description = "Location of the lake bucket; null puts it in `region`. External tables need it inside bq_location (a US region for US)."
  default     = null
  nullable    = true
}

# ------------------------------------------------------------------------------------------- names
variable "bucket_name" {
  type        = string
  description = "Lake bucket name (GCS_BUCKET); null means <project_id>-coincap-lake. Bucket names are global."
  default     = null
  nullable    = true
}

variable "dataset_prefix" {
  type        = string
  description = "Prefix of the BigQuery datasets (BQ_DATASET_PREFIX): <prefix>raw, <prefix>staging, <prefix>marts, <prefix>ops."
  default     = "coincap_"

  validation {
    condition     = can(regex("^[A-Za-z0-9_]*$", var.dataset_prefix))
    error_message = "dataset_prefix uses letters, digits and underscores only."
  }
}

variable "api_key_secret_id" {
  type        = string
  description = "Secret Manager secret that holds the CoinCap API key (COINCAP_API_KEY_SECRET); its value is set out of band."
  default     = "coincap-api-key"
}

variable "prefect_api_key_secret_id" {
  type        = string
  description = "Secret Manager secret that holds the Prefect API key the flow runs use (the work pool's prefect_api_key_secret); its value is set out of band. null creates no secret and lets the worker pass its own key in plain text (only for a self-hosted server without auth)."
  default     = "prefect-api-key"
  nullable    = true

  validation {
    condition     = var.prefect_api_key_secret_id == null ? true : can(regex("^[A-Za-z0-9_-]{1,255}$", var.prefect_api_key_secret_id))
    error_message = "Secret ids use letters, digits, dashes and underscores (at most 255), or null for no secret."
  }
}

variable "service_account_id" {
  type        = string
  description = "Id of the runtime service account the Cloud Run jobs run as."
  default     = "coincap-pipeline"
}

variable "artifact_repository_id" {
  type        = string
  description = "Artifact Registry Docker repository for the flow image."
  default     = "coincap-pipeline"
}

variable "work_pool_name" {
  type        = string
  description = "Prefect work pool (PIPELINE_WORK_POOL) that prefect.yaml's gcp deployments target."
  default     = "coincap-cloud-run"
}

variable "labels" {
  type        = map(string)
  description = "Extra labels on every resource, merged over app, env and managed-by."
  default     = {}

  validation {
    condition     = alltrue([for k, v in var.labels : can(regex("^[a-z][a-z0-9_-]{0,62}$", k)) && can(regex("^[a-z0-9_-]{0,63}$", v))])
    error_message = "Label keys and values are lowercase letters, digits, dashes and underscores (keys start with a letter)."
  }
}

# -------------------------------------------------------------------------------------- retention
variable "granular_retention_days" {
  type        = number
  description = "The one retention of granular data (PIPELINE_GRANULAR_RETENTION_DAYS in pipeline_env): the lake's snapshot, stream and quarantine files, staging's daily partitions in BigQuery, and the snapshot-grain marts (the flows pass it to dbt) go after it. Price history and daily aggregates are kept."
  default     = 365

  validation {
    condition     = var.granular_retention_days >= 31
    error_message = "granular_retention_days is at least 31: the daily marts' 30-day windows read that much granular data."
  }
}

variable "results_retention_days" {
  type        = number
  description = "Days Prefect's persisted task results (gs://<bucket>/prefect-results) are kept, i.e. how long a failed run can be resumed."
  default     = 30

  validation {
    condition     = var.results_retention_days >= 1
    error_message = "results_retention_days is at least 1."
  }
}

variable "noncurrent_version_retention_days" {
  type        = number
  description = "Days a deleted or replaced lake object version stays recoverable."
  default     = 30

  validation {
    condition     = var.noncurrent_version_retention_days >= 1
    error_message = "noncurrent_version_retention_days is at least 1."
  }
}

variable "soft_delete_retention_days" {
  type        = number
  description = "Days a permanently deleted lake object can still be restored: 0 (off) or 7 to 90."
  default     = 7

  validation {
    condition     = var.soft_delete_retention_days == 0 || (var.soft_delete_retention_days >= 7 && var.soft_delete_retention_days <= 90)
    error_message = "soft_delete_retention_days is 0 or between 7 and 90."
  }
}

# ------------------------------------------------------------------------------------- flow runs
variable "image" {
  type        = string
  description = "Default image of the flow runs; null means <repository_url>/coincap-pipeline:latest. prefect.yaml may override it per deployment."
  default     = null
  nullable    = true
}

variable "job_cpu" {
  type        = string
  description = "CPU of each Cloud Run job (\"1\", \"2\", or millicpus like \"1000m\")."
  default     = "1"
}

variable "job_memory" {
  type        = string
  description = "Memory of each Cloud Run job, e.g. 2Gi (Cloud Run's 512Mi default is too small for markets)."
  default     = "2Gi"
}

variable "job_timeout_seconds" {
  type        = number
  description = "Seconds a Cloud Run job may run before it is stopped (Cloud Run's default of 600 cuts a full snapshot short)."
  default     = 3600
}

variable "base_job_template_file" {
  type        = string
  description = "Path of the Cloud Run v2 base job template JSON; null means deployments/cloud-run-v2-job-template.json in this repository."
  default     = null
  nullable    = true
}

variable "worker_members" {
  type        = list(string)
  description = "IAM principals that run `prefect worker start --pool <work_pool_name>`: the identity of the worker's Application Default Credentials (a user, or a VM's service account). They get roles/run.developer on project_id and may run jobs as the runtime account."
  default     = []
}

# ---------------------------------------------------------------------------------------- prefect
variable "prefect_account_id" {
  type        = string
  description = "Prefect Cloud account id (UUID); null reads PREFECT_CLOUD_ACCOUNT_ID. Not needed for a self-hosted server."
  default     = null
  nullable    = true
}

variable "prefect_workspace_id" {
  type        = string
  description = "Prefect Cloud workspace id (UUID) that holds the work pool; null uses the provider's default. Not needed for a self-hosted server."
  default     = null
  nullable    = true
}
