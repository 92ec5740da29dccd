"""The webhook worker service: consumes `webhook.*` and POSTs signed JSON to the recipients' URLs."""
