"""The dashboard's pages, by what they are about (base: what they share)."""
