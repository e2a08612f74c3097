"""The AI module: one shared OpenAI-compatible client, chat (plain and streamed), a usage
ledger and monthly token quotas. Only `seams.py` knows about the other optional modules."""
