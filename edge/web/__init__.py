"""The unit's local web pages: the in-car alert page (served on the in-car network only)."""
