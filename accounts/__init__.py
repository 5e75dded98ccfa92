"""Accounts: users, JWT login and refresh, password change."""
