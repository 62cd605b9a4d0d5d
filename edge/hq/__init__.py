"""Headquarters: ingest of the units' batches from MQTT into PostgreSQL, the device registry, hot list publishing."""
