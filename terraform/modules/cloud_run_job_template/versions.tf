# No provider: this module only renders JSON, so it can be planned and tested offline.
terraform {
  required_version = ">= 1.5"
}
