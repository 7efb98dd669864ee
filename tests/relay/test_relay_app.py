"""Relay handlers: signed uploads, owner-only mailboxes, caps, quotas, expiry, restarts."""

from __future__ import annotations

import asyncio
import hashlib
import time

import pytest
from relayhelp import ALICE, BOB, EVE, box, sealed_bytes, signed, upload

from commuter.peer import auth
from commuter.relay.app import STATE, make_relay_app
from commuter.relay.quotas import Limits
from commuter.relay.store import FileStore


@pytest.fixture
def data_dir(tmp_path):
    return tmp_path / "relay"


def file_storage(app):
    """The file store's Storage under a relay app."""
    store = app[STATE].store
    assert isinstance(store, FileStore)
    return store.storage


def stored_files(data_dir):
    return sorted(p.name for p in (data_dir / "mailboxes").rglob("*") if p.is_file())


async def test_health_is_public(aiohttp_client, data_dir):
    client = await aiohttp_client(make_relay_app(data_dir))
    resp = await client.get("/")
    data = await resp.json()
    assert resp.status == 200 and data["service"] == "commuter-relay" and data["status"] == "ok"
    assert data["limits"]["max_bundle"] > 0


async def test_upload_list_download_delete(aiohttp_client, data_dir, tmp_path):
    client = await aiohttp_client(make_relay_app(data_dir))
    body = sealed_bytes(tmp_path, ALICE, [BOB])
    resp = await upload(client, ALICE, BOB, body)
    assert resp.status == 201, await resp.text()
    item = (await resp.json())["id"]
    resp = await client.get(box(BOB), headers=signed(BOB, "GET", box(BOB)))
    [listed] = (await resp.json())["items"]
    assert listed["id"] == item and listed["sender"] == ALICE.device_id
    assert listed["digest"] == hashlib.sha256(body).hexdigest()
    path = f"{box(BOB)}/{item}"
    resp = await client.get(path, headers=signed(BOB, "GET", path))
    assert resp.status == 200 and await resp.read() == body
    resp = await client.delete(path, headers=signed(BOB, "DELETE", path))
    assert resp.status == 200
    resp = await client.get(box(BOB), headers=signed(BOB, "GET", box(BOB)))
    assert (await resp.json())["items"] == []
    assert stored_files(data_dir) == []


async def test_unsigned_upload_is_refused_and_nothing_stored(aiohttp_client, data_dir, tmp_path):
    client = await aiohttp_client(make_relay_app(data_dir))
    resp = await client.post(box(BOB), data=sealed_bytes(tmp_path, ALICE, [BOB]))
    assert resp.status == 401
    assert (await resp.json())["error"] == "bad-signature"
    assert stored_files(data_dir) == []


async def test_wrongly_signed_uploads_are_refused(aiohttp_client, data_dir, tmp_path):
    client = await aiohttp_client(make_relay_app(data_dir))
    body = sealed_bytes(tmp_path, ALICE, [BOB])
    # Signed digest of another body.
    headers = signed(ALICE, "POST", box(BOB), body + b"x")
    resp = await client.post(box(BOB), data=body, headers=headers)
    assert resp.status == 401
    # A signature made by another key than the one named.
    headers = signed(EVE, "POST", box(BOB), body)
    headers[auth.H_KEY] = signed(ALICE, "POST", box(BOB), body)[auth.H_KEY]
    resp = await client.post(box(BOB), data=body, headers=headers)
    assert resp.status == 401
    # Signed for another mailbox (path is signed).
    headers = signed(ALICE, "POST", box(EVE), body)
    resp = await client.post(box(BOB), data=body, headers=headers)
    assert resp.status == 401
    # Replayed.
    headers = signed(ALICE, "POST", box(BOB), body)
    assert (await client.post(box(BOB), data=body, headers=headers)).status == 201
    resp = await client.post(box(BOB), data=body, headers=headers)
    assert resp.status == 401 and (await resp.json())["error"] == "replayed"
    assert len(stored_files(data_dir)) == 2  # the one good upload: .sealed + .json


async def test_upload_must_be_a_seal_to_the_mailbox_owner_by_the_uploader(
    aiohttp_client, data_dir, tmp_path
):
    client = await aiohttp_client(make_relay_app(data_dir))
    resp = await upload(client, ALICE, BOB, b"plain text conversation")
    assert resp.status == 400 and (await resp.json())["error"] == "bad-bundle"
    resp = await upload(client, ALICE, BOB, sealed_bytes(tmp_path, ALICE, [EVE]))
    assert resp.status == 400 and "not sealed to" in (await resp.json())["message"]
    resp = await upload(client, EVE, BOB, sealed_bytes(tmp_path, ALICE, [BOB]))
    assert resp.status == 401
    assert stored_files(data_dir) == []
    assert list((data_dir / "tmp").iterdir()) == []


async def test_someone_else_cannot_read_or_delete_my_mailbox(aiohttp_client, data_dir, tmp_path):
    client = await aiohttp_client(make_relay_app(data_dir))
    resp = await upload(client, ALICE, BOB, sealed_bytes(tmp_path, ALICE, [BOB]))
    item = (await resp.json())["id"]
    resp = await client.get(box(BOB), headers=signed(EVE, "GET", box(BOB)))
    assert resp.status == 403 and (await resp.json())["error"] == "relay-forbidden"
    path = f"{box(BOB)}/{item}"
    assert (await client.get(path, headers=signed(EVE, "GET", path))).status == 403
    assert (await client.delete(path, headers=signed(EVE, "DELETE", path))).status == 403
    assert (await client.get(path)).status == 401
    assert len(stored_files(data_dir)) == 2


async def test_oversized_upload_gets_413(aiohttp_client, data_dir, tmp_path):
    client = await aiohttp_client(make_relay_app(data_dir, Limits(max_bundle=2000)))
    resp = await upload(client, ALICE, BOB, sealed_bytes(tmp_path, ALICE, [BOB], size=5000))
    assert resp.status == 413 and (await resp.json())["error"] == "too-large"
    assert stored_files(data_dir) == []


async def test_quotas_per_recipient_and_per_sender(aiohttp_client, data_dir, tmp_path):
    limits = Limits(mailbox_items=2, sender_items=3)
    client = await aiohttp_client(make_relay_app(data_dir, limits))
    for _ in range(2):
        resp = await upload(client, ALICE, BOB, sealed_bytes(tmp_path, ALICE, [BOB]))
        assert resp.status == 201
    resp = await upload(client, ALICE, BOB, sealed_bytes(tmp_path, ALICE, [BOB]))
    assert resp.status == 429 and "mailbox is full" in (await resp.json())["message"]
    assert (await upload(client, ALICE, EVE, sealed_bytes(tmp_path, ALICE, [EVE]))).status == 201
    resp = await upload(client, ALICE, EVE, sealed_bytes(tmp_path, ALICE, [EVE]))
    assert resp.status == 429 and "too much queued" in (await resp.json())["message"]
    byte_client = await aiohttp_client(make_relay_app(tmp_path / "r2", Limits(mailbox_bytes=5000)))
    resp = await upload(byte_client, ALICE, BOB, sealed_bytes(tmp_path, ALICE, [BOB]))
    assert resp.status == 201
    resp = await upload(byte_client, ALICE, BOB, sealed_bytes(tmp_path, ALICE, [BOB]))
    assert resp.status == 429


async def test_expired_items_are_swept_on_access(aiohttp_client, data_dir, tmp_path):
    app = make_relay_app(data_dir, Limits(ttl=60))
    client = await aiohttp_client(app)
    resp = await upload(client, ALICE, BOB, sealed_bytes(tmp_path, ALICE, [BOB]))
    item = (await resp.json())["id"]
    storage = file_storage(app)
    assert storage.expire(now=time.time() + 30) == 0
    assert storage.expire(now=time.time() + 61) == 1
    path = f"{box(BOB)}/{item}"
    assert (await client.get(path, headers=signed(BOB, "GET", path))).status == 404
    assert stored_files(data_dir) == []


async def test_expired_items_are_swept_on_a_timer(aiohttp_client, data_dir, tmp_path):
    client = await aiohttp_client(make_relay_app(data_dir, Limits(ttl=0.2, sweep_interval=0.1)))
    assert (await upload(client, ALICE, BOB, sealed_bytes(tmp_path, ALICE, [BOB]))).status == 201
    for _ in range(50):  # bounded: 5 s
        if not stored_files(data_dir):
            break
        await asyncio.sleep(0.1)
    assert stored_files(data_dir) == []


async def test_queued_items_survive_a_restart_and_partials_do_not(
    aiohttp_client, data_dir, tmp_path
):
    client = await aiohttp_client(make_relay_app(data_dir))
    body = sealed_bytes(tmp_path, ALICE, [BOB])
    item = (await (await upload(client, ALICE, BOB, body)).json())["id"]
    # What a crash mid-upload or between the two renames leaves behind.
    (data_dir / "tmp" / ".upload-dead.tmp").write_bytes(b"half")
    mailbox = data_dir / "mailboxes" / BOB.device_id
    (mailbox / "1700000000-00000000deadbeef.sealed").write_bytes(b"orphan")
    (mailbox / ".x.json.tmp").write_bytes(b"{")
    client2 = await aiohttp_client(make_relay_app(data_dir))
    resp = await client2.get(box(BOB), headers=signed(BOB, "GET", box(BOB)))
    assert [i["id"] for i in (await resp.json())["items"]] == [item]
    assert stored_files(data_dir) == sorted([f"{item}.json", f"{item}.sealed"])
    assert list((data_dir / "tmp").iterdir()) == []
    path = f"{box(BOB)}/{item}"
    assert await (await client2.get(path, headers=signed(BOB, "GET", path))).read() == body


async def test_bad_mailbox_ids_are_404(aiohttp_client, data_dir):
    client = await aiohttp_client(make_relay_app(data_dir))
    resp = await client.get("/v1/mailbox/not-a-device", headers=signed(BOB, "GET", "/x"))
    assert resp.status == 404
    path = f"{box(BOB)}/../../etc"
    resp = await client.get(path, headers=signed(BOB, "GET", path))
    assert resp.status in (400, 404)


async def test_concurrent_uploads_cannot_pass_the_quotas_together(
    aiohttp_client, data_dir, tmp_path
):
    # Every upload is checked while the others are still in flight: they count from the start.
    client = await aiohttp_client(make_relay_app(data_dir, Limits(mailbox_items=2)))
    bodies = [sealed_bytes(tmp_path, ALICE, [BOB]) for _ in range(20)]
    answers = await asyncio.gather(*(upload(client, ALICE, BOB, b) for b in bodies))
    assert sorted(a.status for a in answers) == [201] * 2 + [429] * 18
    assert len(stored_files(data_dir)) == 4  # two items, .sealed + .json each
    by_bytes = await aiohttp_client(
        make_relay_app(tmp_path / "r2", Limits(sender_bytes=3 * len(bodies[0]) + 10))
    )
    answers = await asyncio.gather(
        *(upload(by_bytes, ALICE, EVE, sealed_bytes(tmp_path, ALICE, [EVE])) for _ in range(10))
    )
    assert sorted(a.status for a in answers) == [201] * 3 + [429] * 7
    assert list((tmp_path / "r2" / "tmp").iterdir()) == []


async def _stalling_upload(server, sender, to, declared: int, sent: bytes):
    """A raw POST declaring `declared` bytes that sends `sent` and then nothing."""
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    path = box(to)
    headers = signed(sender, "POST", path, b"x" * 10)
    head = f"POST {path} HTTP/1.1\r\nHost: relay\r\nContent-Length: {declared}\r\n"
    head += "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    writer.write(head.encode() + b"\r\n" + sent)
    await writer.drain()
    return reader, writer


async def _until(predicate, seconds: float = 15.0) -> bool:
    for _ in range(int(seconds / 0.05)):  # bounded
        if predicate():
            return True
        await asyncio.sleep(0.05)
    return predicate()


def _temp_sizes(data_dir) -> list[int]:
    return sorted(p.stat().st_size for p in (data_dir / "tmp").iterdir())


async def test_silent_uploads_do_not_lock_a_mailbox(
    aiohttp_server, aiohttp_client, data_dir, tmp_path
):
    # Old relays reserved the declared Content-Length (and an item slot) until the body
    # arrived, with no timeout: four silent connections kept the mailbox at 429.
    app = make_relay_app(data_dir, Limits(mailbox_bytes=2 * 2**20, mailbox_items=4))
    server = await aiohttp_server(app)
    client = await aiohttp_client(server)
    stallers = [await _stalling_upload(server, EVE, BOB, 2**19, b"\x00") for _ in range(4)]
    assert await _until(lambda: len(_temp_sizes(data_dir)) == 4)  # all four are receiving
    body = sealed_bytes(tmp_path, ALICE, [BOB])
    resp = await upload(client, ALICE, BOB, body)
    assert resp.status == 201, await resp.text()
    for _reader, writer in stallers:
        writer.close()
    assert await _until(lambda: not _temp_sizes(data_dir))


async def test_a_stalled_upload_is_dropped_after_the_stall_bound(aiohttp_server, data_dir):
    app = make_relay_app(data_dir, Limits(body_stall=1.0))
    server = await aiohttp_server(app)
    reader, writer = await _stalling_upload(server, EVE, BOB, 2**19, b"\x00" * 100)
    assert await _until(lambda: file_storage(app).usage() == (1, 100))
    # Answered and cut off within the bound; nothing of it is kept or reserved.
    answer = await asyncio.wait_for(reader.read(), 30)
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    writer.close()
    assert await _until(lambda: not _temp_sizes(data_dir))
    assert file_storage(app).usage() == (0, 0)


async def test_an_upload_in_progress_holds_only_the_bytes_received(
    aiohttp_server, aiohttp_client, data_dir, tmp_path
):
    app = make_relay_app(data_dir, Limits(mailbox_bytes=10_000))
    server = await aiohttp_server(app)
    client = await aiohttp_client(server)
    _reader, writer = await _stalling_upload(server, EVE, BOB, 10_000, b"\x00" * 6000)
    storage = file_storage(app)
    assert await _until(lambda: storage.usage(mailbox=BOB.device_id)[1] >= 6000)
    resp = await upload(client, ALICE, BOB, sealed_bytes(tmp_path, ALICE, [BOB], size=5000))
    assert resp.status == 429  # 6000 received + ~5100 would pass 10,000
    body = sealed_bytes(tmp_path, ALICE, [BOB], size=2000)
    resp = await upload(client, ALICE, BOB, body)
    assert resp.status == 201, await resp.text()
    writer.close()
    assert await _until(lambda: not _temp_sizes(data_dir))
    assert storage.usage() == (1, len(body))


async def test_the_relay_refuses_a_request_replayed_after_a_restart(
    aiohttp_client, data_dir, tmp_path
):
    body = sealed_bytes(tmp_path, ALICE, [BOB])
    headers = signed(ALICE, "POST", box(BOB), body)
    first = await aiohttp_client(make_relay_app(data_dir))
    assert (await first.post(box(BOB), data=body, headers=headers)).status == 201
    await first.close()
    second = await aiohttp_client(make_relay_app(data_dir))
    resp = await second.post(box(BOB), data=body, headers=headers)
    assert resp.status == 401 and (await resp.json())["error"] == "replayed"
    listing = await second.get(box(BOB), headers=signed(BOB, "GET", box(BOB)))
    assert len((await listing.json())["items"]) == 1


async def test_a_key_over_its_request_rate_gets_429(aiohttp_client, data_dir):
    from commuter.peer.auth import Rates

    rates = Rates(per_key=0.01, key_burst=5, new_keys=0.01, new_key_burst=2)
    client = await aiohttp_client(make_relay_app(data_dir, Limits(rates=rates)))
    for _ in range(5):
        assert (await client.get(box(BOB), headers=signed(BOB, "GET", box(BOB)))).status == 200
    resp = await client.get(box(BOB), headers=signed(BOB, "GET", box(BOB)))
    assert resp.status == 429 and (await resp.json())["error"] == "rate-limited"
    # Another key has its own bucket; a third new key at once is over the new-key rate.
    assert (await client.get(box(ALICE), headers=signed(ALICE, "GET", box(ALICE)))).status == 200
    resp = await client.get(box(EVE), headers=signed(EVE, "GET", box(EVE)))
    assert resp.status == 429


async def test_one_sender_cannot_fill_a_mailbox_and_the_relay_has_a_total_cap(
    aiohttp_client, data_dir, tmp_path
):
    client = await aiohttp_client(make_relay_app(data_dir, Limits(sender_mailbox_items=1)))
    assert (await upload(client, EVE, BOB, sealed_bytes(tmp_path, EVE, [BOB]))).status == 201
    resp = await upload(client, EVE, BOB, sealed_bytes(tmp_path, EVE, [BOB]))
    assert resp.status == 429 and "for that recipient" in (await resp.json())["message"]
    assert (await upload(client, ALICE, BOB, sealed_bytes(tmp_path, ALICE, [BOB]))).status == 201
    capped = await aiohttp_client(make_relay_app(tmp_path / "r2", Limits(total_bytes=5000)))
    assert (await upload(capped, ALICE, BOB, sealed_bytes(tmp_path, ALICE, [BOB]))).status == 201
    resp = await upload(capped, EVE, ALICE, sealed_bytes(tmp_path, EVE, [ALICE]))
    assert resp.status == 507 and (await resp.json())["error"] == "relay-storage-full"
