"""Dead letters: failed notifications, their replay, and the broker's dead-letter queues."""
