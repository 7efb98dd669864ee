"""The peer layer: identity keys, sealing, signed requests, pairing, discovery, server, client."""
