"""rules tables in the registry database."""
