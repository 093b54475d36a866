"""Kalman filter of the incubator: estimates the heater temperature T_h (never measured)
and the box air temperature T from the heater input, the room temperature and the box
sensors, with the INTO-CPS four-parameter model.

Input `state`: the PT's samples (fields average_temperature, t1, heater_on; ts in ns).
Outputs, one record per sample, at the sample's own timestamp:
  estimate          t_heater, t_box (after the update), t_box_predicted (before it)
  prediction_error  error = measured − predicted box temperature, t_box_measured,
                    t_box_predicted, variance (the innovation's predicted variance)
It computes with data timestamps only: replaying recorded data faster than real time
gives the same estimates.
"""

import math

MODEL = {
    "c_air": 267.55929458,
    "g_box": 0.5763498,
    "c_heater": 329.25376821,
    "g_heater": 1.67053237,
    "v": 12.15579391,
    "i": 1.53551347,
}

# Longest integration step, s (the model's fastest time constant is about 200 s).
MAX_STEP = 0.5
# A gap in the data longer than this restarts the filter from the measurement.
MAX_GAP_S = 600.0
# A prediction across a longer gap (samples lost, a restore) assumed the heater kept its
# last state throughout; its error says little, so none is reported for it.
MAX_PREDICT_S = 15.0


class KalmanFilter:
    def __init__(self, params=None):
        params = dict(params or {})
        self.model = {k: float(params.get(k, v)) for k, v in MODEL.items()}
        # Process noise per second (°C²/s) and measurement noise (°C²).
        self.q_heater = float(params.get("q_heater", 0.002))
        self.q_box = float(params.get("q_box", 0.0002))
        self.r = float(params.get("r", 0.01))
        self.x = None  # [T_h, T]
        self.p = None  # 2x2 covariance
        self.last = None  # (ts, heater_on, t_room) of the previous sample

    # The linear model dx/dt = A x + b, for the heater and room of one interval.
    def _derivative(self, x, heater_on, t_room):
        m = self.model
        to_air = m["g_heater"] * (x[0] - x[1])
        power = m["v"] * m["i"] if heater_on else 0.0
        return [(power - to_air) / m["c_heater"],
                (to_air - m["g_box"] * (x[1] - t_room)) / m["c_air"]]

    def _transition(self, dt):
        """The state transition matrix of the homogeneous part over dt (Euler steps)."""
        m = self.model
        a = [[-m["g_heater"] / m["c_heater"], m["g_heater"] / m["c_heater"]],
             [m["g_heater"] / m["c_air"], -(m["g_heater"] + m["g_box"]) / m["c_air"]]]
        steps = max(1, int(math.ceil(dt / MAX_STEP)))
        h = dt / steps
        step = [[1 + h * a[0][0], h * a[0][1]], [h * a[1][0], 1 + h * a[1][1]]]
        phi = [[1.0, 0.0], [0.0, 1.0]]
        for _ in range(steps):
            phi = _mul(step, phi)
        return phi, steps, h

    def step(self, ts, measured, heater_on, t_room):
        """One sample: returns (t_heater, t_box, t_box_predicted, error, variance), or
        None for the first sample (which only initialises the filter). After a gap
        longer than MAX_PREDICT_S, error and variance are None."""
        if self.x is None or self.last is None or not (0 < (ts - self.last[0]) / 1e9 <= MAX_GAP_S):
            if self.last is not None and ts <= self.last[0]:
                return None  # an old or repeated sample: nothing new to learn
            self.x = [measured, measured]
            self.p = [[4.0, 0.0], [0.0, self.r]]
            self.last = (ts, heater_on, t_room)
            return None
        dt = (ts - self.last[0]) / 1e9
        _, prev_heater, prev_room = self.last
        phi, steps, h = self._transition(dt)
        x = list(self.x)
        for _ in range(steps):
            d = self._derivative(x, prev_heater, prev_room)
            x = [x[0] + h * d[0], x[1] + h * d[1]]
        p = _add(_mul(_mul(phi, self.p), _t(phi)), [[self.q_heater * dt, 0.0], [0.0, self.q_box * dt]])
        predicted = x[1]
        error = measured - predicted
        s = p[1][1] + self.r
        k = [p[0][1] / s, p[1][1] / s]
        self.x = [x[0] + k[0] * error, x[1] + k[1] * error]
        self.p = [[p[0][0] - k[0] * p[1][0], p[0][1] - k[0] * p[1][1]],
                  [p[1][0] - k[1] * p[1][0], p[1][1] - k[1] * p[1][1]]]
        self.last = (ts, heater_on, t_room)
        if dt > MAX_PREDICT_S:
            return self.x[0], self.x[1], predicted, None, None
        return self.x[0], self.x[1], predicted, error, s

    def state(self):
        return {"x": self.x, "p": self.p, "last": self.last}

    def restore(self, state):
        self.x = state.get("x")
        self.p = state.get("p")
        last = state.get("last")
        self.last = tuple(last) if last else None


def _mul(a, b):
    return [[a[0][0] * b[0][0] + a[0][1] * b[1][0], a[0][0] * b[0][1] + a[0][1] * b[1][1]],
            [a[1][0] * b[0][0] + a[1][1] * b[1][0], a[1][0] * b[0][1] + a[1][1] * b[1][1]]]


def _t(a):
    return [[a[0][0], a[1][0]], [a[0][1], a[1][1]]]


def _add(a, b):
    return [[a[0][0] + b[0][0], a[0][1] + b[0][1]], [a[1][0] + b[1][0], a[1][1] + b[1][1]]]


class Function:
    """The filter as a DT process: one input `state`, two outputs."""

    def __init__(self, params):
        self.filter = KalmanFilter(params)

    def on_record(self, _input, record):
        from dtaas_process import field

        fields = record.get("fields") or {}
        measured = field(record, "average_temperature")
        if measured is None and "t2" in fields and "t3" in fields:
            measured = (fields["t2"] + fields["t3"]) / 2.0
        heater = field(record, "heater_on")
        room = field(record, "t1")
        if measured is None or heater is None or room is None:
            return []
        ts = record["ts"]
        result = self.filter.step(ts, float(measured), bool(heater), float(room))
        if result is None:
            return []
        t_heater, t_box, predicted, error, variance = result
        outputs = [("estimate", ts, {"t_heater": t_heater, "t_box": t_box, "t_box_predicted": predicted})]
        if error is not None:
            outputs.append(("prediction_error", ts, {"error": error, "t_box_measured": float(measured),
                                                     "t_box_predicted": predicted, "variance": variance}))
        return outputs

    def state(self):
        return self.filter.state()

    def restore(self, state):
        self.filter.restore(state)


if __name__ == "__main__":
    import dtaas_process

    process = dtaas_process.Process(None, inputs=["state"], outputs=["estimate", "prediction_error"])
    process.function = Function(process.params)
    process.run()
