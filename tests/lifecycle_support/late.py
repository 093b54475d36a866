# A DT function written before the ready request, for the replay test: it subscribes
# to input x only 2 s after it started and never answers ctl.ready; publishes x as
# output z.
import asyncio, json, os, time

import msgpack
import nats


async def main():
    nc = await nats.connect(os.environ["DTAAS_NATS_URL"])
    out = os.environ["DTAAS_OUT_Z"]

    async def on_input(msg):
        record = msgpack.unpackb(msg.data)
        x = next(iter(record["fields"].values()))
        z = {"pt": os.environ["DTAAS_DT"], "measurement": "z", "ts": time.time_ns(),
             "fields": {"z": x}}
        await nc.publish(out, json.dumps(z).encode())

    await asyncio.sleep(2)
    await nc.subscribe(os.environ["DTAAS_IN_X"], cb=on_input)
    print("late subscribed", flush=True)
    while True:
        await asyncio.sleep(3600)


asyncio.run(main())
