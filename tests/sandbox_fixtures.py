"""Fixtures that start the OpenAI sandbox for a test (filled in by the sandbox work)."""
