//! The simulated incubator as a whole: plant, controller and noisy sensors, stepped in
//! simulated time, producing one sample per period and taking commands.
//!
//! Samples carry the fields of the INTO-CPS incubator's recorded experiments, so
//! recorded and simulated data look alike to a DT.

use super::refused::Refused;
use serde::{Deserialize, Serialize};

use super::controller::{Controller, ControllerParams, ControllerUpdate};
use super::thermal::{Params, Plant};

/// One sample, published as JSON on `dtaas/pt/<pt>/tel/state`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    /// Simulated time of the sample, ns since the Unix epoch.
    pub ts: i64,
    /// Room temperature sensor, °C.
    pub t1: f64,
    /// Box temperature sensors, °C.
    pub t2: f64,
    pub t3: f64,
    /// Mean of the box sensors, °C: what the controller sees.
    pub average_temperature: f64,
    /// The heater's state from this sample to the next.
    pub heater_on: bool,
    pub fan_on: bool,
    /// `cooling_down`, `heating` or `waiting`.
    pub controller_state: String,
    pub temperature_desired: f64,
    pub lower_bound: f64,
    pub heating_time: f64,
    pub heating_gap: f64,
}

/// A command the incubator understands, decoded from its payload.
#[derive(Debug, Clone, PartialEq)]
pub enum Order {
    /// New controller parameters (any subset).
    Controller(ControllerUpdate),
    /// Open or close the lid.
    Lid { open: bool },
    /// A new room temperature, °C.
    Room { temperature: f64 },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LidPayload {
    open: bool,
    #[allow(dead_code)]
    #[serde(default)]
    id: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RoomPayload {
    temperature: f64,
    #[allow(dead_code)]
    #[serde(default)]
    id: Option<String>,
}

/// The commands the simulator answers, for help texts and error messages.
pub const COMMANDS: &str = "controller, lid, room";

impl Order {
    /// Decodes the payload of command `name`; the error says what is wrong.
    pub fn parse(name: &str, payload: &[u8]) -> Result<Self, Refused> {
        let bad = |e: serde_json::Error| Refused(format!("invalid {name} payload: {e}"));
        match name {
            "controller" => Ok(Self::Controller(
                serde_json::from_slice(payload).map_err(bad)?,
            )),
            "lid" => {
                let lid: LidPayload = serde_json::from_slice(payload).map_err(bad)?;
                Ok(Self::Lid { open: lid.open })
            }
            "room" => {
                let room: RoomPayload = serde_json::from_slice(payload).map_err(bad)?;
                Ok(Self::Room {
                    temperature: room.temperature,
                })
            }
            other => Err(Refused(format!(
                "unknown command {other:?}; this incubator understands {COMMANDS}"
            ))),
        }
    }
}

/// The whole simulated incubator.
#[derive(Debug)]
pub struct Incubator {
    plant: Plant,
    controller: Controller,
    /// Room temperature, °C.
    t_room: f64,
    /// Standard deviation of each sensor's noise, °C.
    noise_sd: f64,
    rng: fastrand::Rng,
    /// Simulated seconds since the start.
    time_s: f64,
    /// The timestamp of simulated time zero, ns since the Unix epoch.
    start_ns: i64,
}

impl Incubator {
    pub fn new(t_room: f64, noise_sd: f64, seed: u64, start_ns: i64) -> Self {
        Self {
            plant: Plant::at_rest(Params::default(), t_room),
            controller: Controller::new(ControllerParams::default()),
            t_room,
            noise_sd,
            rng: fastrand::Rng::with_seed(seed),
            time_s: 0.0,
            start_ns,
        }
    }

    /// Reads the sensors, lets the controller decide, then lets `period_s` pass.
    pub fn step(&mut self, period_s: f64) -> Sample {
        let t1 = self.t_room + self.noise();
        let t2 = self.plant.t_box + self.noise();
        let t3 = self.plant.t_box + self.noise();
        let average_temperature = (t2 + t3) / 2.0;
        self.controller.step(self.time_s, average_temperature);
        let p = self.controller.params;
        let sample = Sample {
            ts: self.start_ns + (self.time_s * 1e9).round() as i64,
            t1,
            t2,
            t3,
            average_temperature,
            heater_on: self.controller.heater_on(),
            fan_on: true,
            controller_state: self.controller.mode.as_str().to_owned(),
            temperature_desired: p.temperature_desired,
            lower_bound: p.lower_bound,
            heating_time: p.heating_time,
            heating_gap: p.heating_gap,
        };
        self.plant
            .advance(period_s, self.controller.heater_on(), self.t_room);
        self.time_s += period_s;
        sample
    }

    /// Applies a command; an invalid one changes nothing.
    pub fn apply(&mut self, order: &Order) -> Result<(), Refused> {
        match order {
            Order::Controller(update) => {
                self.controller.params = self.controller.params.updated(update)?;
            }
            Order::Lid { open } => self.plant.lid_open = *open,
            Order::Room { temperature } => {
                if !(-40.0..=60.0).contains(temperature) {
                    return Err(Refused(format!(
                        "temperature must lie in -40..=60 °C, got {temperature}"
                    )));
                }
                self.t_room = *temperature;
            }
        }
        Ok(())
    }

    /// A normally distributed sensor error (Box–Muller).
    fn noise(&mut self) -> f64 {
        if self.noise_sd == 0.0 {
            return 0.0;
        }
        let u1 = self.rng.f64().max(f64::MIN_POSITIVE);
        let u2 = self.rng.f64();
        self.noise_sd * (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warms_up_towards_the_setpoint_and_holds_it() {
        let mut inc = Incubator::new(25.0, 0.05, 1, 0);
        let samples: Vec<Sample> = (0..2000).map(|_| inc.step(3.0)).collect();
        let late = &samples[1500..];
        let mean = late.iter().map(|s| s.average_temperature).sum::<f64>() / late.len() as f64;
        assert!((30.0..=37.0).contains(&mean), "mean {mean}");
        assert!(late.iter().any(|s| s.heater_on));
        assert!(late.iter().any(|s| !s.heater_on));
        assert_eq!(samples[1].ts, 3_000_000_000);
    }

    #[test]
    fn an_open_lid_drops_the_temperature() {
        let mut inc = Incubator::new(21.0, 0.0, 1, 0);
        for _ in 0..1000 {
            inc.step(3.0);
        }
        let before = inc.step(3.0).average_temperature;
        inc.apply(&Order::parse("lid", br#"{"open":true}"#).unwrap())
            .unwrap();
        for _ in 0..100 {
            inc.step(3.0);
        }
        let after = inc.step(3.0).average_temperature;
        assert!(after < before - 3.0, "{before} -> {after}");
    }

    #[test]
    fn commands_are_checked() {
        assert!(Order::parse("lid", br#"{"open":"yes"}"#)
            .unwrap_err()
            .to_string()
            .contains("lid"));
        assert!(Order::parse("fly", b"{}")
            .unwrap_err()
            .to_string()
            .contains("controller"));
        let mut inc = Incubator::new(21.0, 0.0, 1, 0);
        let bad = Order::parse("controller", br#"{"heating_time":0}"#).unwrap();
        assert!(inc.apply(&bad).is_err());
        let good = Order::parse("controller", br#"{"heating_time":40,"id":"x"}"#).unwrap();
        inc.apply(&good).unwrap();
        assert_eq!(inc.step(3.0).heating_time, 40.0);
    }
}
