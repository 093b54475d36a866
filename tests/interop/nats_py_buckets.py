"""Create-or-open dtaas' KV buckets and object stores from nats-py, as any client would.

Usage: nats_py_buckets.py <nats-url> <spec.json>; the spec lists
{"kv": [{"bucket", "history", "description", "replicas"}], "objects": [{"bucket",
"description", "replicas"}]}. Prints one line per bucket and exits non-zero on the
first failure (nats-py's error names it).
"""

import asyncio
import json
import sys

import nats
from nats.js.api import KeyValueConfig, ObjectStoreConfig, StorageType


async def main(url: str, spec: dict) -> None:
    nc = await nats.connect(url)
    js = nc.jetstream()
    for b in spec["kv"]:
        kv = await js.create_key_value(
            KeyValueConfig(
                bucket=b["bucket"],
                history=b["history"],
                description=b["description"],
                replicas=b["replicas"],
                storage=StorageType.FILE,
            )
        )
        await kv.put("nats-py.probe", b"1")
        entry = await kv.get("nats-py.probe")
        assert entry.value == b"1", entry
        await kv.purge("nats-py.probe")
        print(f"kv {b['bucket']}: create-or-open, put, get ok", flush=True)
    for o in spec["objects"]:
        store = await js.create_object_store(
            o["bucket"],
            config=ObjectStoreConfig(
                description=o["description"],
                replicas=o["replicas"],
                storage=StorageType.FILE,
            ),
        )
        await store.put("nats-py.probe", b"object")
        got = await store.get("nats-py.probe")
        assert got.data == b"object", got
        await store.delete("nats-py.probe")
        print(f"object store {o['bucket']}: create-or-open, put, get ok", flush=True)
    await nc.close()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], json.load(open(sys.argv[2]))))
