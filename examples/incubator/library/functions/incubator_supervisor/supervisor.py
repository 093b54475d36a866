"""Supervisor of the incubator: when the anomaly detector says the lid is open, it
sends the PT controller parameters for an open lid (longer heating bursts, shorter
gaps); when the anomaly clears, it sends the normal ones back. Commands go through
`cmd.send` like any other client's, so the ledger shows them.

Input `anomaly`: the detector's records (field `active`).
Output `mode`: one record per change, fields `anomaly` (bool) and `command_id`.
Params: pt (default inc1), user (request identity; default $DTAAS_USER or dtaas),
ttl_ms, and the controller parameters for each mode: normal_heating_time,
normal_heating_gap, anomaly_heating_time, anomaly_heating_gap (s), and
temperature_desired, lower_bound (°C) for both.
"""

import json
import os

DEFAULTS = {
    "temperature_desired": 35.0, "lower_bound": 5.0,
    "normal_heating_time": 20.0, "normal_heating_gap": 30.0,
    "anomaly_heating_time": 50.0, "anomaly_heating_gap": 10.0,
}


def controller_params(params, mode):
    """The controller parameters of `mode` (normal or anomaly) from flat params."""
    def get(name):
        return float(params.get(name, DEFAULTS[name]))
    return {"temperature_desired": get("temperature_desired"), "lower_bound": get("lower_bound"),
            "heating_time": get(mode + "_heating_time"), "heating_gap": get(mode + "_heating_gap")}


class Supervisor:
    def __init__(self, params=None):
        params = dict(params or {})
        self.pt = params.get("pt", "inc1")
        self.normal = controller_params(params, "normal")
        self.lid_open = controller_params(params, "anomaly")
        self.ttl_ms = int(params.get("ttl_ms", 60000))
        self.active = False
        self.last_ts = None

    def decide(self, ts, active):
        """The controller parameters to send for this sample, or None."""
        if self.last_ts is not None and ts <= self.last_ts:
            return None
        self.last_ts = ts
        if bool(active) == self.active:
            return None
        self.active = bool(active)
        return self.lid_open if self.active else self.normal

    def state(self):
        return {"active": self.active, "last_ts": self.last_ts}

    def restore(self, state):
        self.active = bool(state.get("active", False))
        self.last_ts = state.get("last_ts")


class Function:
    def __init__(self, params):
        self.supervisor = Supervisor(params)
        self.user = params.get("user") or os.environ.get("DTAAS_USER") or "dtaas"
        self.process = None

    def on_start(self, process):
        self.process = process

    def on_record(self, _input, record):
        active = (record.get("fields") or {}).get("active")
        if active is None:
            return []
        ts = record["ts"]
        params = self.supervisor.decide(ts, active)
        if params is None:
            return []
        command_id = self.send(params)
        return [("mode", ts, {"anomaly": self.supervisor.active, "command_id": command_id})]

    def send(self, params):
        s = self.supervisor
        request = {"pt": s.pt, "command": "controller", "payload": params, "ttl_ms": s.ttl_ms}
        subject = "dtaas.v1.%s.cmd.send" % self.user
        reply = self.process.publish_confirmed(subject, json.dumps(request).encode(),
                                               {"Content-Type": "application/json"},
                                               retry_errors=False)
        if "error" in reply:
            self.process.log("cmd.send refused the controller command: %s" % reply["error"])
            return ""
        self.process.log("sent %s controller parameters %s: command %s"
                         % ("lid-open" if s.active else "normal", params, reply.get("id")))
        return reply.get("id", "")

    def state(self):
        return self.supervisor.state()

    def restore(self, state):
        self.supervisor.restore(state)


if __name__ == "__main__":
    import dtaas_process

    process = dtaas_process.Process(None, inputs=["anomaly"], outputs=["mode"])
    process.function = Function(process.params)
    process.run()
