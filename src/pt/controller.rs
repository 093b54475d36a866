//! The incubator's bang-bang controller (INTO-CPS `ControllerModel4`): cool down to
//! `desired − lower_bound`, then heat in bursts of `heating_time` seconds separated by
//! `heating_gap` seconds while the box is at or below `desired`.

use super::refused::Refused;
use serde::{Deserialize, Serialize};

/// The controller's parameters; the `controller` command changes any of them.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ControllerParams {
    /// Desired box temperature, °C.
    pub temperature_desired: f64,
    /// How far below `temperature_desired` the box may cool before heating again, °C.
    pub lower_bound: f64,
    /// Length of one heating burst, s.
    pub heating_time: f64,
    /// Pause after a heating burst, s.
    pub heating_gap: f64,
}

impl Default for ControllerParams {
    /// The INTO-CPS defaults.
    fn default() -> Self {
        Self {
            temperature_desired: 35.0,
            lower_bound: 5.0,
            heating_time: 20.0,
            heating_gap: 30.0,
        }
    }
}

/// A `controller` command: every field optional, the rest stays as it is.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ControllerUpdate {
    pub temperature_desired: Option<f64>,
    pub lower_bound: Option<f64>,
    pub heating_time: Option<f64>,
    pub heating_gap: Option<f64>,
    /// The command id, for devices that learn it from the payload (see `docs/bridge.md`).
    #[serde(default)]
    pub id: Option<String>,
}

impl ControllerParams {
    /// These parameters with `update` applied, or why the update is refused.
    pub fn updated(self, update: &ControllerUpdate) -> Result<Self, Refused> {
        let next = Self {
            temperature_desired: update
                .temperature_desired
                .unwrap_or(self.temperature_desired),
            lower_bound: update.lower_bound.unwrap_or(self.lower_bound),
            heating_time: update.heating_time.unwrap_or(self.heating_time),
            heating_gap: update.heating_gap.unwrap_or(self.heating_gap),
        };
        let checks = [
            ("temperature_desired", next.temperature_desired, 0.0, 80.0),
            ("lower_bound", next.lower_bound, 0.0, 50.0),
            ("heating_time", next.heating_time, 1.0, 3600.0),
            ("heating_gap", next.heating_gap, 0.0, 3600.0),
        ];
        for (name, value, min, max) in checks {
            if !(min..=max).contains(&value) {
                return Err(Refused(format!(
                    "{name} must lie in {min}..={max}, got {value}"
                )));
            }
        }
        Ok(next)
    }
}

/// What the controller is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    CoolingDown,
    Heating,
    Waiting,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::CoolingDown => "cooling_down",
            Self::Heating => "heating",
            Self::Waiting => "waiting",
        }
    }
}

/// The controller's state between steps.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Controller {
    pub params: ControllerParams,
    pub mode: Mode,
    /// Simulated time (s) at which the current heating burst or gap ends.
    next_time: f64,
}

impl Controller {
    pub fn new(params: ControllerParams) -> Self {
        Self {
            params,
            mode: Mode::CoolingDown,
            next_time: 0.0,
        }
    }

    /// Whether the heater is on.
    pub fn heater_on(&self) -> bool {
        self.mode == Mode::Heating
    }

    /// One decision at simulated time `now_s` with the measured box temperature.
    pub fn step(&mut self, now_s: f64, t_box: f64) {
        let p = self.params;
        match self.mode {
            Mode::CoolingDown => {
                if t_box <= p.temperature_desired - p.lower_bound {
                    self.start_heating(now_s);
                }
            }
            Mode::Heating => {
                if now_s >= self.next_time {
                    self.mode = Mode::Waiting;
                    self.next_time = now_s + p.heating_gap;
                }
            }
            Mode::Waiting => {
                if now_s >= self.next_time {
                    if t_box <= p.temperature_desired {
                        self.start_heating(now_s);
                    } else {
                        self.mode = Mode::CoolingDown;
                    }
                }
            }
        }
    }

    fn start_heating(&mut self, now_s: f64) {
        self.mode = Mode::Heating;
        self.next_time = now_s + self.params.heating_time;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heats_in_bursts_below_the_setpoint_and_cools_above() {
        let mut c = Controller::new(ControllerParams::default());
        c.step(0.0, 21.0);
        assert!(c.heater_on());
        c.step(19.0, 22.0);
        assert!(c.heater_on());
        c.step(21.0, 23.0);
        assert_eq!(c.mode, Mode::Waiting);
        c.step(50.0, 24.0);
        assert_eq!(c.mode, Mode::Waiting);
        c.step(51.0, 24.0);
        assert!(c.heater_on());
        c.step(72.0, 36.0);
        c.step(102.0, 36.0);
        assert_eq!(c.mode, Mode::CoolingDown);
        c.step(105.0, 31.0);
        assert_eq!(c.mode, Mode::CoolingDown);
        c.step(108.0, 29.9);
        assert!(c.heater_on());
    }

    #[test]
    fn updates_are_partial_and_checked() {
        let p = ControllerParams::default();
        let update: ControllerUpdate = serde_json::from_str(r#"{"heating_time":40}"#).unwrap();
        let next = p.updated(&update).unwrap();
        assert_eq!(next.heating_time, 40.0);
        assert_eq!(next.heating_gap, 30.0);
        let bad: ControllerUpdate = serde_json::from_str(r#"{"heating_gap":-1}"#).unwrap();
        assert!(p
            .updated(&bad)
            .unwrap_err()
            .to_string()
            .contains("heating_gap"));
        assert!(serde_json::from_str::<ControllerUpdate>(r#"{"heat":1}"#).is_err());
    }
}
