variable "project_id" {
  type        = string
  description = "The Google Cloud project that owns the bucket."
}

variable "name" {
  type        = string
  description = "Globally unique bucket name, e.g. example-project-coincap-lake."

  validation {
    condition     = can(regex("^[a-z0-9][a-z0-9_.-]{1,61}[a-z0-9]$", var.name))
    error_message = "Bucket names are 3-63 lowercase letters, digits, dots, dashes or underscores."
  }
}

variable "location" {
  type        = string
  description = "Bucket location: a region (us-central1) or a multi-region (US). BigQuery reads it from a dataset in the same or an enclosing location."
}

variable "labels" {
  type        = map(string)
  description = "Labels on the bucket."
  default     = {}
}

variable "granular_prefixes" {
  type        = list(string)
  description = "Object prefixes holding granular, dt-partitioned files, deleted after granular_retention_days: the same list as GRANULAR_PREFIXES in flows/maintenance.py (the local retention). Price history (coincap/asset_history/) and its quarantine are daily data, kept forever, so no prefix may cover them."
  default = [
    "coincap/assets/",
    "coincap/rates/",
    "coincap/exchanges/",
    "coincap/markets/",
    "coincap/prices_stream/",
    "coincap/prices_stream_gaps/",
    "quarantine/assets/",
    "quarantine/rates/",
    "quarantine/exchanges/",
    "quarantine/markets/",
    "quarantine/prices_stream/",
  ]

  validation {
    condition = length(var.granular_prefixes) > 0 && alltrue(flatten([
      for p in var.granular_prefixes : [
        for kept in ["coincap/asset_history/", "quarantine/asset_history/"] : endswith(p, "/") && !startswith(kept, p) && !startswith(p, kept)
      ]
    ]))
    error_message = "granular_prefixes end with / and none may cover coincap/asset_history/ or quarantine/asset_history/ (history is kept forever)."
  }
}

variable "granular_retention_days" {
  type        = number
  description = "Days after which snapshot files under granular_prefixes are deleted."
  default     = 365

  validation {
    condition     = var.granular_retention_days >= 1 && floor(var.granular_retention_days) == var.granular_retention_days
    error_message = "granular_retention_days is a whole number of days, at least 1."
  }
}

variable "results_prefix" {
  type        = string
  description = "Object prefix of Prefect's persisted task results (what lets a retry resume)."
  default     = "prefect-results/"
}

variable "results_retention_days" {
  type        = number
  description = "Days after which persisted Prefect results are deleted; a run older than this can no longer be resumed."
  default     = 30

  validation {
    condition     = var.results_retention_days >= 1 && floor(var.results_retention_days) == var.results_retention_days
    error_message = "results_retention_days is a whole number of days, at least 1."
  }
}

variable "noncurrent_version_retention_days" {
  type        = number
  description = "Days a deleted or overwritten object version is kept before it is removed for good."
  default     = 30

  validation {
    condition     = var.noncurrent_version_retention_days >= 1 && floor(var.noncurrent_version_retention_days) == var.noncurrent_version_retention_days
    error_message = "noncurrent_version_retention_days is a whole number of days, at least 1."
  }
}

variable "soft_delete_retention_days" {
  type        = number
  description = "Days a permanently deleted object stays restorable (soft delete): 0 turns it off, otherwise 7 to 90."
  default     = 7

  validation {
    condition     = var.soft_delete_retention_days == 0 || (var.soft_delete_retention_days >= 7 && var.soft_delete_retention_days <= 90)
    error_message = "soft_delete_retention_days is 0 (off) or between 7 and 90."
  }
}

variable "force_destroy" {
  type        = bool
  description = "Let `terraform destroy` delete a bucket that still holds objects. Keep false outside throwaway projects."
  default     = false
}
