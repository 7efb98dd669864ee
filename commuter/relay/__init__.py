"""The relay server (`commuter relay serve`): a mailbox that only ever holds ciphertext.

It lives in its own package, not in commuter.peer, because it runs on a different machine
with a different trust model: it pairs with no one and never holds a key that opens a bundle;
it shares only commuter.peer.auth (signed requests) and seal's header check with the peers.
"""
