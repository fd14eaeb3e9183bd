"""The wire schema: every message as a tagged msgspec Struct, and the codec."""
