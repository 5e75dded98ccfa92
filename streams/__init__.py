"""Streams: a user's ingest key, its destinations, publish state and relay status."""
