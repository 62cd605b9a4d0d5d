"""Sync between the unit and headquarters over MQTT (protocol shared by both ends)."""
