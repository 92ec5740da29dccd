"""Webhook mechanics below delivery: tenants' signing secrets (Standard Webhooks' `whsec_` format),
signing, and the SSRF guard on the URLs tenants name."""
