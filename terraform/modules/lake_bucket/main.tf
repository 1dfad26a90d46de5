# The lake: one Parquet object per dataset per snapshot, written once with a generation precondition and read
# by BigQuery external tables. Private by construction: uniform bucket-level access (IAM only, no object
# ACLs) and public access prevention enforced, so no binding can ever expose it.
resource "google_storage_bucket" "lake" {
  #checkov:skip=CKV_GCP_62:Access logs would need a second bucket; Cloud Audit Logs (Data Access for GCS) is the supported way to audit reads.
  project       = var.project_id
  name          = var.name
  location      = var.location
  storage_class = "STANDARD"
  labels        = var.labels
  force_destroy = var.force_destroy

  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"

  # Writes use if_generation_match=0, so live objects are never overwritten; versioning protects against a
  # mistaken delete, and the rules below bound what it costs.
  versioning {
    enabled = true
  }

  soft_delete_policy {
    retention_duration_seconds = var.soft_delete_retention_days * 86400
  }

  lifecycle_rule {
    condition {
      age            = var.granular_retention_days
      matches_prefix = var.granular_prefixes
      with_state     = "LIVE"
    }
    action {
      type = "Delete"
    }
  }

  lifecycle_rule {
    condition {
      age            = var.results_retention_days
      matches_prefix = [var.results_prefix]
      with_state     = "LIVE"
    }
    action {
      type = "Delete"
    }
  }

  lifecycle_rule {
    condition {
      days_since_noncurrent_time = var.noncurrent_version_retention_days
      with_state                 = "ARCHIVED"
    }
    action {
      type = "Delete"
    }
  }

  # An interrupted multipart (XML API) upload leaves parts that are billed until they are aborted.
  lifecycle_rule {
    condition {
      age = 1
    }
    action {
      type = "AbortIncompleteMultipartUpload"
    }
  }
}
