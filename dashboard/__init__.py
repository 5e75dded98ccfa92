"""The web dashboard: rig's pages for streamers (streams, OBS settings, destinations, live
relay status, webhooks, account) and operators (ingest nodes), served by rig itself at /app/."""
