"""Providers: one module per channel, each speaking its provider's real wire protocol."""
