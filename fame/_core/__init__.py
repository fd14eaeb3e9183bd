"""Actors, mailboxes, reply slots, supervision, addresses and errors: the runtime's core."""
