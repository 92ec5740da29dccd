"""Webhook signing secrets: one per tenant, in the Standard Webhooks `whsec_` format."""
