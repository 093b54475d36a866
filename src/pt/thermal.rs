//! The incubator's physics: the INTO-CPS four-parameter thermal model of the box air
//! and the heater, integrated in small steps of simulated time.
//!
//! `C_air·dT/dt = G_heater·(T_h − T) − G_box·(T − T_room)` and
//! `C_heater·dT_h/dt = V·I·heater_on − G_heater·(T_h − T)`, with the constants fitted
//! to the real incubator by the INTO-CPS authors. An open lid multiplies `G_box`.

/// The constants of the four-parameter model (SI units: J/K, W/K, V, A).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Params {
    /// Heat capacity of the box air, J/K.
    pub c_air: f64,
    /// Conductance from the box air to the room, W/K.
    pub g_box: f64,
    /// Heat capacity of the heater, J/K.
    pub c_heater: f64,
    /// Conductance from the heater to the box air, W/K.
    pub g_heater: f64,
    /// Heater voltage, V.
    pub v: f64,
    /// Heater current, A.
    pub i: f64,
}

impl Default for Params {
    /// The INTO-CPS incubator's fitted values.
    fn default() -> Self {
        Self {
            c_air: 267.559_294_58,
            g_box: 0.576_349_8,
            c_heater: 329.253_768_21,
            g_heater: 1.670_532_37,
            v: 12.155_793_91,
            i: 1.535_513_47,
        }
    }
}

/// How much an open lid multiplies `G_box` (about 7 in the INTO-CPS lid-open runs).
pub const LID_OPEN_FACTOR: f64 = 7.0;

/// Longest integration step; the fastest time constant (C_heater/G_heater) is ~200 s.
const MAX_STEP_S: f64 = 0.5;

/// The plant's state: what the world is, not what the sensors say.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Plant {
    pub params: Params,
    /// Box air temperature, °C.
    pub t_box: f64,
    /// Heater temperature, °C (never measured).
    pub t_heater: f64,
    /// Whether the lid is open (multiplies `G_box` by [`LID_OPEN_FACTOR`]).
    pub lid_open: bool,
}

impl Plant {
    /// A plant at rest at room temperature.
    pub fn at_rest(params: Params, t_room: f64) -> Self {
        Self {
            params,
            t_box: t_room,
            t_heater: t_room,
            lid_open: false,
        }
    }

    /// Advances the plant by `dt_s` seconds with the heater as given and the room at
    /// `t_room`, in explicit Euler steps of at most [`MAX_STEP_S`].
    pub fn advance(&mut self, dt_s: f64, heater_on: bool, t_room: f64) {
        let p = self.params;
        let g_box = if self.lid_open {
            p.g_box * LID_OPEN_FACTOR
        } else {
            p.g_box
        };
        let power = if heater_on { p.v * p.i } else { 0.0 };
        let steps = (dt_s / MAX_STEP_S).ceil().max(1.0);
        let h = dt_s / steps;
        for _ in 0..steps as u64 {
            let to_air = p.g_heater * (self.t_heater - self.t_box);
            let to_room = g_box * (self.t_box - t_room);
            self.t_box += h * (to_air - to_room) / p.c_air;
            self.t_heater += h * (power - to_air) / p.c_heater;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heater_on_for_long_settles_at_power_over_g_box() {
        let mut plant = Plant::at_rest(Params::default(), 21.0);
        plant.advance(20_000.0, true, 21.0);
        let p = Params::default();
        let expected = 21.0 + p.v * p.i / p.g_box;
        assert!((plant.t_box - expected).abs() < 0.05, "{}", plant.t_box);
        assert!(plant.t_heater > plant.t_box);
    }

    #[test]
    fn an_open_lid_cools_faster() {
        let mut closed = Plant::at_rest(Params::default(), 21.0);
        closed.t_box = 35.0;
        closed.t_heater = 35.0;
        let mut open = closed;
        open.lid_open = true;
        closed.advance(60.0, false, 21.0);
        open.advance(60.0, false, 21.0);
        assert!(
            open.t_box < closed.t_box - 1.0,
            "{} vs {}",
            open.t_box,
            closed.t_box
        );
        assert!(closed.t_box < 35.0);
    }
}
