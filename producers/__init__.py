"""Connectors: read an agency's source systems and publish Avro events to src.<ori>.<kind>."""
