"""orders service."""
