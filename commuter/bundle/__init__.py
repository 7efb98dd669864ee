"""Bundles: one versioned, integrity-checked, streamable file holding one session.

`model` holds the format's constants, limits and checks; `write` the streaming writer;
`read` the verifying reader and the entry points below; `legacy` the JSON bundles of
commuter 0.1/0.2. zstandard is loaded only by writing or reading one.
"""

from __future__ import annotations

from commuter.bundle.model import (
    BLOCK,
    DEFAULT_LIMITS,
    DIGEST_NAME,
    FORMAT_VERSION,
    MAGIC,
    MAGIC_PREFIX,
    MANIFEST_NAME,
    MAX_JSON_DEPTH,
    Limits,
    MemberNames,
    Unpacked,
    check_depth,
    check_member_name,
    check_size,
    is_uuid,
    manifest_from_dict,
    manifest_to_dict,
    origin_from_dict,
    root_digest,
)
from commuter.bundle.read import (
    Lines,
    counted,
    describe,
    file_digest,
    is_bundle,
    read_manifest,
    unpack,
)
from commuter.bundle.write import BundleWriter
from commuter.fsutil import CHUNK
from commuter.model import Manifest, Member

__all__ = [
    "BLOCK",
    "CHUNK",
    "DEFAULT_LIMITS",
    "DIGEST_NAME",
    "FORMAT_VERSION",
    "MAGIC",
    "MAGIC_PREFIX",
    "MANIFEST_NAME",
    "MAX_JSON_DEPTH",
    "BundleWriter",
    "Limits",
    "Lines",
    "Manifest",
    "Member",
    "MemberNames",
    "Unpacked",
    "check_depth",
    "check_member_name",
    "check_size",
    "counted",
    "describe",
    "file_digest",
    "is_bundle",
    "is_uuid",
    "manifest_from_dict",
    "manifest_to_dict",
    "origin_from_dict",
    "read_manifest",
    "root_digest",
    "unpack",
]
