# A DT function with state for the save/restore test: counts every 50 ms, answers
# dtaas.v1.dt.<dt>.ctl.save with its count, and starts from DTAAS_STATE when restored.
import asyncio, os

import nats


async def main():
    count = 0
    state = os.environ.get("DTAAS_STATE")
    if state:
        count = int(open(state).read())
    nc = await nats.connect(os.environ["DTAAS_NATS_URL"])

    async def on_save(msg):
        await nc.publish(msg.reply, str(count).encode(),
                         headers={"Dtaas-Role": os.environ["DTAAS_ROLE"]})

    await nc.subscribe(f"dtaas.v1.dt.{os.environ['DTAAS_DT']}.ctl.save", cb=on_save)
    print("counter starts at", count, flush=True)
    while True:
        await asyncio.sleep(0.05)
        count += 1


asyncio.run(main())
