output "service_account_email" {
  description = "Email of the runtime service account the Cloud Run jobs run as."
  value       = google_service_account.runtime.email
}

output "service_account_member" {
  description = "The runtime service account as an IAM member, serviceAccount:<email>."
  value       = local.member
}
