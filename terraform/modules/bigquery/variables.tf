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

variable "staging_table_expiration_days" {
  type        = number
  description = "Default lifetime of tables in the staging dataset, in days; null (the default) keeps them: staging holds dbt's incremental tables with the whole history."
  default     = null
  nullable    = true

  validation {
    condition     = var.staging_table_expiration_days == null ? true : var.staging_table_expiration_days >= 1
    error_message = "staging_table_expiration_days is at least 1 (BigQuery's minimum is one hour), or null."
  }
}

variable "granular_partition_expiration_days" {
  type        = number
  description = "Days BigQuery keeps each daily partition of the granular snapshot facts in marts; dbt reads it from this module's output."
  default     = 365

  validation {
    condition     = var.granular_partition_expiration_days >= 1 && floor(var.granular_partition_expiration_days) == var.granular_partition_expiration_days
    error_message = "granular_partition_expiration_days is a whole number of days, at least 1."
  }
}

variable "delete_contents_on_destroy" {
  type        = bool
  description = "Let `terraform destroy` drop datasets that still hold tables. Keep false outside throwaway projects."
  default     = false
}
