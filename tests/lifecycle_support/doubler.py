# A DT function for the lifecycle tests and docs/process-contract.md: reads input x,
# publishes factor * x as output y; answers dtaas.v1.dt.<dt>.ctl.ready once subscribed.
import asyncio, json, os, time

import msgpack
import nats


def decode(data):
    """A telemetry record, or an array of them: MessagePack (what the bridge sends PT
    telemetry as) or JSON."""
    if data[:1] in (b"{", b"["):
        return json.loads(data)
    return msgpack.unpackb(data)


async def main():
    nc = await nats.connect(os.environ["DTAAS_NATS_URL"])
    params = json.loads(os.environ.get("DTAAS_PARAMS", "{}"))
    factor = params.get("factor", 2)
    out = os.environ["DTAAS_OUT_Y"]

    async def on_input(msg):
        record = decode(msg.data)
        if isinstance(record, list):
            record = record[-1]
        x = next(iter(record["fields"].values()))
        y = {"pt": os.environ["DTAAS_DT"], "measurement": "y", "ts": time.time_ns(),
             "fields": {"y": factor * x}}
        await nc.publish(out, json.dumps(y).encode())

    async def on_ready(msg):
        await nc.publish(msg.reply, b"{}", headers={"Dtaas-Role": os.environ["DTAAS_ROLE"]})

    await nc.subscribe(os.environ["DTAAS_IN_X"], cb=on_input)
    # Subscribed after the input (one connection, in order): answering means the
    # input's records reach on_input, so a replay may start.
    await nc.subscribe(f"dtaas.v1.dt.{os.environ['DTAAS_DT']}.ctl.ready", cb=on_ready)
    print("doubler ready, factor", factor, flush=True)
    while True:
        await asyncio.sleep(3600)


asyncio.run(main())
