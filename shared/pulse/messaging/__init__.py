"""RabbitMQ: the topology every service shares, the Celery app factory, and publishing."""
