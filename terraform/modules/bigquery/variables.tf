variable "project_id" {
  type        = string
  description = "The Google Cloud project that owns the datasets."
}

variable "location" {
  type        = string
  description = "BigQuery location of every dataset (BQ_LOCATION), e.g. US or europe-west1. It must contain the lake bucket's location."
}

variable "dataset_prefix" {
  type        = string
  description = "Prefix of the dataset names (BQ_DATASET_PREFIX): <prefix>raw, <prefix>staging, <prefix>marts, <prefix>ops."
  default     = "coincap_"

  validation {
    condition     = can(regex("^[A-Za-z0-9_]{0,1000}$", var.dataset_prefix))
    error_message = "BigQuery dataset names use letters, digits and underscores only."
  }
}

variable "bucket_name" {
  type        = string
  description = "The lake bucket the raw external tables read, without gs://."
}

variable "labels" {
  type        = map(string)
  description = "Labels on every dataset and table; each dataset also gets a `layer` label."
  default     = {}
}

variable "granular_retention_days" {
  type        = number
  description = "Days granular data is kept (PIPELINE_GRANULAR_RETENTION_DAYS): each daily partition of the staging tables expires after it; the flows pass the same number to dbt for the snapshot-grain marts, and the lake bucket's lifecycle rule uses it too."
  default     = 365

  validation {
    condition     = var.granular_retention_days >= 31 && floor(var.granular_retention_days) == var.granular_retention_days
    error_message = "granular_retention_days is a whole number of days, at least 31: the daily marts' 30-day windows read that much granular data."
  }
}

variable "delete_contents_on_destroy" {
  type        = bool
  description = "Let `terraform destroy` drop datasets that still hold tables. Keep false outside throwaway projects."
  default     = false
}
