"""campaigns service."""
