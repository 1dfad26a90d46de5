terraform {
  required_version = ">= 1.5"

  required_providers {
    # 8.x: the offline schema lint (tests/test_terraform.py) checks every resource against provider 8.7's
    # schema, so stay on this major until that lint moves too.
    google = {
      source  = "hashicorp/google"
      version = "~> 8.7"
    }
    prefect = {
      source  = "prefecthq/prefect"
      version = "~> 2.1"
    }
  }

  # Remote state in a bucket you create once, outside this configuration (partial configuration):
  #   terraform init -backend-config="bucket=example-project-tfstate" -backend-config="prefix=coincap-pipeline/prod"
  # CI validates with `terraform init -backend=false`.
  backend "gcs" {}
}
