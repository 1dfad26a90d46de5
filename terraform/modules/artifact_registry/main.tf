# Holds the flow image the Cloud Run jobs run. Cleanup policies keep storage bounded: recent versions are
# always kept, untagged leftovers of rebuilt tags are deleted.
resource "google_artifact_registry_repository" "images" {
  #checkov:skip=CKV_GCP_84:Google-managed encryption: the image holds open-source code and no secrets (the API key comes from Secret Manager at run time).
  project       = var.project_id
  location      = var.location
  repository_id = var.repository_id
  description   = "Container images of the CoinCap pipeline flows."
  format        = "DOCKER"
  labels        = var.labels

  cleanup_policy_dry_run = false

  cleanup_policies {
    id     = "keep-recent"
    action = "KEEP"
    most_recent_versions {
      keep_count = var.keep_recent_versions
    }
  }

  cleanup_policies {
    id     = "delete-old-untagged"
    action = "DELETE"
    condition {
      tag_state  = "UNTAGGED"
      older_than = "${var.untagged_retention_days * 86400}s"
    }
  }
}
