"""The fabric's IO: websocket transport, uplink, client, identity, the sentinel."""
