"""Accounts, tokens, social login and API keys. Wired in by `modules.py`."""
