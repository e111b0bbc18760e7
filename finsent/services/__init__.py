"""Embedded real servers (Kafka, Elasticsearch) for machines without Docker, and for tests."""
