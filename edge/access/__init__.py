"""Accountability: individual user accounts with roles (P12); the access record (P13, P14) follows in issue 7."""
