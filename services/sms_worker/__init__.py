"""The sms worker service: consumes `sms.*` and `whatsapp.*` and delivers over Twilio's Messages API."""
