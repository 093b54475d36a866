"""The INTO-CPS incubator's four-parameter thermal model (box air T, heater T_h):

    C_air    dT/dt   = G_heater (T_h - T) - G_box (T - T_room)
    C_heater dT_h/dt = V I heater_on - G_heater (T_h - T)

with the constants the INTO-CPS authors fitted to the real incubator (params.json).
An open lid multiplies G_box (by about 7 in their lid-open experiments). Used by the
Kalman filter's tests to produce recorded-like data, and by anyone for what-if runs.
"""

import json
import os

with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "params.json")) as f:
    PARAMS = json.load(f)

LID_OPEN_FACTOR = 7.0


class Plant:
    def __init__(self, t_room, params=None, heater_scale=1.0):
        self.p = dict(PARAMS if params is None else params)
        self.t_box = t_room
        self.t_heater = t_room
        self.lid_open = False
        # > 1 models a stronger heater than the fitted one (an older incubator's).
        self.heater_scale = heater_scale

    def advance(self, dt, heater_on, t_room, max_step=0.5):
        p = self.p
        g_box = p["g_box"] * (LID_OPEN_FACTOR if self.lid_open else 1.0)
        power = p["v"] * p["i"] * self.heater_scale if heater_on else 0.0
        steps = max(1, int(-(-dt // max_step)))
        h = dt / steps
        for _ in range(steps):
            to_air = p["g_heater"] * (self.t_heater - self.t_box)
            to_room = g_box * (self.t_box - t_room)
            self.t_box += h * (to_air - to_room) / p["c_air"]
            self.t_heater += h * (power - to_air) / p["c_heater"]


class BangBang:
    """The INTO-CPS controller: cool to desired - lower_bound, then heat in bursts of
    heating_time separated by heating_gap while at or below desired."""

    def __init__(self, desired=35.0, lower_bound=5.0, heating_time=20.0, heating_gap=30.0):
        self.desired, self.lower_bound = desired, lower_bound
        self.heating_time, self.heating_gap = heating_time, heating_gap
        self.mode, self.next_time = "cooling_down", 0.0

    def step(self, now, t_box):
        if self.mode == "cooling_down":
            if t_box <= self.desired - self.lower_bound:
                self.mode, self.next_time = "heating", now + self.heating_time
        elif self.mode == "heating":
            if now >= self.next_time:
                self.mode, self.next_time = "waiting", now + self.heating_gap
        elif now >= self.next_time:
            if t_box <= self.desired:
                self.mode, self.next_time = "heating", now + self.heating_time
            else:
                self.mode = "cooling_down"
        return self.mode == "heating"
