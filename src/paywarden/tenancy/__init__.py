"""Merchants (accounts), API keys, scopes and authentication."""
