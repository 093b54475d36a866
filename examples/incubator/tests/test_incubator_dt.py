"""Unit tests of the incubator DT's functions on recorded-like data: samples of the
plant model with sensor noise and the INTO-CPS controller, in the PT's own format.

    python3 -m unittest discover -s examples/incubator/tests
"""

import os
import random
import sys
import unittest

LIB = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "library")
for folder in ("models/incubator_plant", "functions/incubator_kalman",
               "functions/incubator_anomaly", "functions/incubator_supervisor"):
    sys.path.insert(0, os.path.join(LIB, folder))

import anomaly  # noqa: E402
import kalman  # noqa: E402
import plant  # noqa: E402
import supervisor  # noqa: E402

PERIOD = 3.0
START_NS = 1_767_225_600_000_000_000


def record(n, lid=None, heater_scale=1.0, room=21.0, noise=0.1, seed=1):
    """n samples as the PT sends them (ts in ns), with the lid open for the sample
    indexes in `lid` (a range), and the true heater temperature alongside."""
    rng = random.Random(seed)
    p = plant.Plant(room, heater_scale=heater_scale)
    ctrl = plant.BangBang()
    out = []
    for k in range(n):
        p.lid_open = lid is not None and k in lid
        t2 = p.t_box + rng.gauss(0, noise)
        t3 = p.t_box + rng.gauss(0, noise)
        avg = (t2 + t3) / 2
        heater = ctrl.step(k * PERIOD, avg)
        fields = {"t1": room + rng.gauss(0, noise), "t2": t2, "t3": t3,
                  "average_temperature": avg, "heater_on": heater, "fan_on": True}
        out.append(({"pt": "inc1", "measurement": "state", "ts": START_NS + int(k * PERIOD * 1e9),
                     "fields": fields}, p.t_heater))
        p.advance(PERIOD, heater, room)
    return out


def run_chain(samples, kalman_fn=None, detector=None):
    """Feeds samples through filter and detector; returns estimates and events."""
    kalman_fn = kalman_fn or kalman.Function({})
    detector = detector or anomaly.Function({})
    estimates, events = [], []
    for rec, _true_heater in samples:
        for output, ts, fields in kalman_fn.on_record("state", rec):
            if output == "estimate":
                estimates.append((ts, fields))
            else:
                before = detector.detector.active
                detector.on_record("error", {"ts": ts, "fields": fields})
                if detector.detector.active != before:
                    events.append(("anomaly" if detector.detector.active else "anomaly_cleared", ts))
    return estimates, events


def index_of(ts):
    return round((ts - START_NS) / (PERIOD * 1e9))


class KalmanTest(unittest.TestCase):
    def test_estimates_the_unmeasured_heater_temperature(self):
        samples = record(1500)
        estimates, _ = run_chain(samples)
        truth = {START_NS + int(k * PERIOD * 1e9): s[1] for k, s in enumerate(samples)}
        late = estimates[300:]
        worst = max(abs(f["t_heater"] - truth[ts]) for ts, f in late)
        self.assertLess(worst, 1.5, "heater estimate off by %.2f °C" % worst)
        box = max(abs(f["t_box"] - samples[index_of(ts)][0]["fields"]["average_temperature"])
                  for ts, f in late)
        self.assertLess(box, 0.5)

    def test_replay_gives_the_same_estimates(self):
        samples = record(400)
        a, _ = run_chain(samples)
        b, _ = run_chain(samples)
        self.assertEqual(a, b)

    def test_save_and_restore_continue_without_a_jump(self):
        samples = record(600)
        whole, _ = run_chain(samples)
        first = kalman.Function({})
        run_chain(samples[:300], kalman_fn=first)
        second = kalman.Function({})
        second.restore(first.state())
        rest, _ = run_chain(samples[300:], kalman_fn=second)
        self.assertEqual(whole[-len(rest):], rest)
        # Samples already seen (a replay after the restore) change nothing.
        self.assertEqual(second.on_record("state", samples[10][0]), [])

    def test_no_error_is_reported_across_a_gap(self):
        # Samples lost (or a restore from an older snapshot): the prediction across the
        # gap assumed the heater kept its state, so no error goes to the detector.
        samples = record(600, lid=None)
        kept = samples[:300] + samples[330:]
        estimates, events = run_chain(kept)
        self.assertEqual(events, [])
        f = kalman.Function({})
        for rec, _ in kept[:300]:
            f.on_record("state", rec)
        self.assertEqual([o[0] for o in f.on_record("state", kept[300][0])], ["estimate"])
        self.assertEqual([o[0] for o in f.on_record("state", kept[301][0])], ["estimate", "prediction_error"])


class AnomalyTest(unittest.TestCase):
    def test_lid_open_raises_and_closing_clears(self):
        samples = record(1400, lid=range(800, 1000))
        _, events = run_chain(samples)
        self.assertEqual([e for e, _ in events], ["anomaly", "anomaly_cleared"], events)
        raised, cleared = index_of(events[0][1]), index_of(events[1][1])
        self.assertTrue(800 <= raised <= 810, "raised at sample %d" % raised)
        self.assertTrue(1000 <= cleared <= 1040, "cleared at sample %d" % cleared)

    def test_a_long_open_lid_keeps_the_alarm(self):
        # The box cools towards the room and the errors shrink; the alarm must hold.
        _, events = run_chain(record(2500, lid=range(800, 1800)))
        self.assertEqual([e for e, _ in events], ["anomaly", "anomaly_cleared"], events)
        self.assertGreaterEqual(index_of(events[1][1]), 1800)

    def test_no_alarm_without_a_lid_over_long_runs(self):
        for seed in range(3):
            _, events = run_chain(record(2000, seed=seed))
            self.assertEqual(events, [], "seed %d" % seed)

    def test_a_stronger_heater_is_no_anomaly(self):
        _, events = run_chain(record(1500, heater_scale=1.5))
        self.assertEqual(events, [])

    def test_warmup_is_ignored(self):
        # The lid is open from the very start: the filter starts from the measurement,
        # and the detector must not decide during the warm-up.
        samples = record(200, lid=range(0, 200))
        _, events = run_chain(samples, detector=anomaly.Function({"warmup_s": 300}))
        self.assertTrue(all(index_of(ts) >= 100 for _, ts in events), events)

    def test_events_are_the_same_in_a_replay(self):
        samples = record(1200, lid=range(700, 900))
        self.assertEqual(run_chain(samples)[1], run_chain(samples)[1])


class SupervisorTest(unittest.TestCase):
    def test_switches_parameters_on_changes_only(self):
        s = supervisor.Supervisor({"anomaly_heating_time": 60})
        self.assertIsNone(s.decide(1, False))
        self.assertEqual(s.decide(2, True)["heating_time"], 60.0)
        self.assertIsNone(s.decide(3, True))
        self.assertEqual(s.decide(4, False)["heating_time"], 20.0)
        self.assertIsNone(s.decide(3, True), "an old sample changes nothing")


if __name__ == "__main__":
    unittest.main()
