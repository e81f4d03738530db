"""Identity: who is calling and with what scopes. Knows nothing about HTTP routes."""
