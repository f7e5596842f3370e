"""A stateful local stand-in for the OpenAI API (dev, tests and the demo only; never production)."""
