"""Status callbacks: a notification's status changes, POSTed to its `callback_url` as signed events."""
