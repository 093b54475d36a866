"""Anomaly detector of the incubator: decides that the lid is open from the Kalman
filter's prediction error.

An open lid makes the box lose heat faster than the model predicts, so the measured
temperature falls below the prediction again and again. The detector runs a one-sided
CUSUM on the negative errors: S = max(floor, min(0, S + error + drift)). It raises an
anomaly when S falls below −threshold and clears it when S is back at 0 (the errors
have been non-negative for a while). Positive errors — a model that under-predicts
heating, say the stronger heater of an older incubator — only pull S back to 0, so
they never raise an alarm. The first `warmup_s` seconds of data (by data timestamps)
are ignored while the filter settles.

Input `error`: records with fields `error` (°C) at the sample's timestamp.
Output `anomaly`: one record per sample, fields `active` (bool) and `cusum`.
Events: dtaas.v1.evt.dt.<dt>.anomaly and .anomaly_cleared, JSON
{"dt","event","ts","at","cusum","detail"} where `ts` (ns) is the data timestamp of the
sample that decided it and `at` the wall clock of the decision.
"""

import json
import time


class Detector:
    def __init__(self, params=None):
        params = dict(params or {})
        self.drift = float(params.get("drift", 0.05))
        self.threshold = float(params.get("threshold", 1.0))
        self.floor = -float(params.get("floor", 2.0)) * self.threshold
        self.warmup_ns = int(float(params.get("warmup_s", 120.0)) * 1e9)
        self.first_ts = None
        self.last_ts = None
        self.cusum = 0.0
        self.active = False

    def step(self, ts, error):
        """One prediction error; returns "anomaly", "anomaly_cleared" or None."""
        if self.last_ts is not None and ts <= self.last_ts:
            return None  # a repeated or old sample (a replay after a restore)
        self.last_ts = ts
        if self.first_ts is None:
            self.first_ts = ts
        if ts - self.first_ts < self.warmup_ns:
            return None
        self.cusum = max(self.floor, min(0.0, self.cusum + error + self.drift))
        if not self.active and self.cusum < -self.threshold:
            self.active = True
            return "anomaly"
        if self.active and self.cusum >= 0.0:
            self.active = False
            return "anomaly_cleared"
        return None

    def state(self):
        return {"first_ts": self.first_ts, "last_ts": self.last_ts, "cusum": self.cusum,
                "active": self.active}

    def restore(self, state):
        self.first_ts = state.get("first_ts")
        self.last_ts = state.get("last_ts")
        self.cusum = float(state.get("cusum", 0.0))
        self.active = bool(state.get("active", False))


class Function:
    """The detector as a DT process."""

    def __init__(self, params):
        self.detector = Detector(params)
        self.process = None

    def on_start(self, process):
        self.process = process

    def on_record(self, _input, record):
        error = (record.get("fields") or {}).get("error")
        if error is None:
            return []
        ts = record["ts"]
        event = self.detector.step(ts, float(error))
        if event is not None and self.process is not None:
            self.emit(event, ts)
        if self.detector.last_ts != ts:
            return []
        return [("anomaly", ts, {"active": self.detector.active, "cusum": self.detector.cusum})]

    def emit(self, event, ts):
        p = self.process
        body = {"dt": p.dt, "event": event, "ts": ts, "at": time.time_ns(),
                "cusum": self.detector.cusum,
                "detail": "lid open? the box loses heat faster than the model predicts"
                if event == "anomaly" else "the box follows the model again"}
        subject = "dtaas.v1.evt.dt.%s.%s" % (p.dt, event)
        headers = {"Content-Type": "application/json", "Nats-Msg-Id": "%s.%s.%d" % (p.dt, event, ts)}
        p.publish_confirmed(subject, json.dumps(body).encode(), headers)
        p.log("%s at data time %d" % (event, ts))

    def state(self):
        return self.detector.state()

    def restore(self, state):
        self.detector.restore(state)


if __name__ == "__main__":
    import dtaas_process

    process = dtaas_process.Process(None, inputs=["error"], outputs=["anomaly"])
    process.function = Function(process.params)
    process.run()
