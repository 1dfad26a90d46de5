variable "name" {
  type        = string
  description = "Work pool name (PIPELINE_WORK_POOL); prefect.yaml's deployments target it."
  default     = "coincap-cloud-run"

  validation {
    condition     = length(trimspace(var.name)) > 0
    error_message = "The work pool needs a name."
  }
}

variable "base_job_template" {
  type        = string
  description = "The base job template as JSON, with its defaults set (the cloud_run_job_template module's json output)."
}

variable "description" {
  type        = string
  description = "Description shown in the Prefect UI."
  default     = "CoinCap pipeline flow runs as Cloud Run v2 jobs."
}

variable "concurrency_limit" {
  type        = number
  description = "Most flow runs of this pool at once; null means no limit (deployments set their own)."
  default     = null
  nullable    = true

  validation {
    condition     = var.concurrency_limit == null ? true : var.concurrency_limit >= 1
    error_message = "concurrency_limit is at least 1, or null."
  }
}

variable "paused" {
  type        = bool
  description = "Create the pool paused (runs queue up but do not start)."
  default     = false
}
