"""Agents: ingest nodes, their tokens, the agent API and nginx-rtmp hooks; node code in node/."""
