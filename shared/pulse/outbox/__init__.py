"""The transactional outbox: publishes owed to RabbitMQ, stored with the data they announce."""
