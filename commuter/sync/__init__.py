"""The sync service (`commuter serve --sync`, `status`, `service`): see docs/sync.md.

daemon.py (the loops), watch.py (polling the session stores), busy.py (is an agent holding a
session), state.py (what each peer has, what waits: SQLite), label.py (what a sealed item
holds, from its first frame), pending.py (what waits on every transport), status_file.py
(the daemon's own status), service.py (systemd / launchd units)."""
