"""The worker side of a notification: claim it, hand it to a provider, record what happened."""
