"""The realtime service: in-app delivery over WebSocket, presence, and the inapp worker."""
