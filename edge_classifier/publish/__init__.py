"""Getting results out: payloads, the MQTT connection, the outbox and spool, the publisher."""
