"""firmware tables in the registry database."""
