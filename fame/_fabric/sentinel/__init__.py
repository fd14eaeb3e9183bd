"""The sentinel: a node that accepts other nodes and routes between them."""
