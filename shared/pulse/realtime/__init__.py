"""The realtime side of the in-app channel: WebSocket connections across realtime processes."""
