terraform {
  required_version = ">= 1.5"

  required_providers {
    prefect = {
      source  = "prefecthq/prefect"
      version = ">= 2.1, < 3.0"
    }
  }
}
