"""`llm-edge bench`: a cheap load generator for OpenAI-compatible endpoints and its honest report."""
