# The secret only: its value (the CoinCap API key) is added out of band with
#   printf %s "$COINCAP_API_KEY" | gcloud secrets versions add coincap-api-key --data-file=-
# so it never reaches Terraform state or the repository.
resource "google_secret_manager_secret" "api_key" {
  project   = var.project_id
  secret_id = var.secret_id
  labels    = var.labels

  replication {
    auto {}
  }
}
