"""The in-app channel: end-user tokens, the inbox (the inapp notification rows), realtime events."""
