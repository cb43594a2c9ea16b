"""firmware domain."""
