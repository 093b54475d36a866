//! `dt.fork`: a what-if copy of one of the caller's DTs. The fork is a new top-level
//! DT (`fork_of` = the source) with the source's configuration, the request's
//! parameter overrides applied and everything validated like `create` (a parameter
//! problem is named `params.<role>.<param>`, the id `as`). With a `replay` window,
//! every input wired to PT telemetry (`dtaas.v1.tel.<pt>.<measurement>`) is rewired
//! to the fork's replay subject (`dtaas.v1.dt.<fork>.replay.<pt>.<measurement>`), so
//! the fork never reads live data; `replay.rs` feeds those subjects from the
//! historian on every execute. A source with children is refused: its children are
//! DTs of their own with their own inputs, and copying a tree under new ids is not
//! what a what-if of one DT needs.

use std::collections::BTreeMap;

use dtaas_schemas::dt_config::{DtConfig, DtState};
use dtaas_schemas::fork::{ForkRequest, Replay, ReplayWindow};
use dtaas_schemas::subject;
use dtaas_schemas::time::{now_ns, parse_time};

use crate::core::{refusal, Core};
use crate::error::{Error, Result};
use crate::ops::tree_states;
use crate::validate::Problem;

/// Role → parameter → value, as `dt.fork` overrides them.
type Overrides = BTreeMap<String, BTreeMap<String, serde_json::Value>>;

impl Core {
    pub async fn fork(&self, user: &str, request: ForkRequest) -> Result<DtState> {
        let source = self.registry.get_owned(user, &request.id).await?.dt;
        if !source.config.children.is_empty() {
            let children: Vec<&str> = source
                .config
                .children
                .iter()
                .map(|c| c.id.as_str())
                .collect();
            return Err(Error::BadRequest(format!(
                "DT {} has children ({}); only a DT without children can be forked (fork \
                 a child on its own, or a DT that reads the outputs you want to vary)",
                source.id,
                children.join(", ")
            )));
        }
        let mut found = Vec::new();
        let mut config = source.config.clone();
        config.id = request.fork.clone();
        override_params(&mut config, &request.params, &mut found);
        // A fork of a fork reads what its source replays, from the same recorded
        // window unless the request names another.
        unwire_replays(&mut config, &source.id);
        let inherited = source.replay.clone().map(|r| Replay {
            progress: None,
            ..r
        });
        let asked = request
            .replay
            .as_ref()
            .map(|w| window(w, now_ns(), &mut found));
        let replay = asked.or(inherited);
        if replay.is_some() && rewire_telemetry(&mut config) == 0 {
            found.push(Problem {
                path: "replay".into(),
                message: format!(
                    "no input of DT {} is wired to PT telemetry \
                     (dtaas.v1.tel.<pt>.<measurement>); there is nothing to replay",
                    source.id
                ),
            });
        }
        let (assets, mut problems) = self.problems(user, &config, found).await?;
        for problem in &mut problems {
            name_by_request(problem, &config, &request.params);
        }
        if !problems.is_empty() {
            return Err(refusal(&config.id, &problems));
        }
        let mut states = tree_states(user, &config, None, &assets);
        states[0].fork_of = Some(source.id.clone());
        states[0].replay = replay;
        self.register(user, states).await
    }
}

/// Applies `overrides` to the uses of `config`; a role it does not have is a problem.
fn override_params(config: &mut DtConfig, overrides: &Overrides, found: &mut Vec<Problem>) {
    let roles: Vec<String> = config.assets.iter().map(|u| u.name.clone()).collect();
    for (role, params) in overrides {
        match config.assets.iter_mut().find(|u| &u.name == role) {
            Some(use_) => use_.params.extend(params.clone()),
            None => found.push(Problem {
                path: format!("params.{role}"),
                message: format!(
                    "the DT has no role {role:?} (there are: {})",
                    roles.join(", ")
                ),
            }),
        }
    }
}

/// The replay of `window`, its times resolved against `now`; problems at `replay.*`.
fn window(window: &ReplayWindow, now: i64, found: &mut Vec<Problem>) -> Replay {
    let mut time = |field: &str, text: &str| match parse_time(text, now) {
        Ok(ns) => Some(ns),
        Err(e) => {
            found.push(Problem {
                path: format!("replay.{field}"),
                message: e.to_string(),
            });
            None
        }
    };
    let from = time("from", &window.from);
    let to = time("to", &window.to);
    if let (Some(from), Some(to)) = (from, to) {
        if from > to {
            found.push(Problem {
                path: "replay.from".into(),
                message: format!("{:?} is after `to` ({:?})", window.from, window.to),
            });
        }
    }
    if let Some(speed) = window.speed.filter(|s| !(s.is_finite() && *s > 0.0)) {
        found.push(Problem {
            path: "replay.speed".into(),
            message: format!(
                "{speed} is not > 0 (1.0 replays at the recorded pace; leave it out for \
                 as fast as possible)"
            ),
        });
    }
    Replay {
        from: from.unwrap_or_default(),
        to: to.unwrap_or_default(),
        speed: window.speed,
        progress: None,
    }
}

/// Rewires every input of `config`'s own uses that reads PT telemetry to the
/// replay subject of DT `config.id`; answers how many it rewired.
pub fn rewire_telemetry(config: &mut DtConfig) -> usize {
    let mut rewired = 0;
    for use_ in &mut config.assets {
        for source in use_.inputs.values_mut() {
            let Ok((pt, measurement)) = subject::parse_telemetry(source) else {
                continue;
            };
            // An invalid fork id has a problem of its own.
            if let Ok(replay) = subject::dt_replay(&config.id, pt, measurement) {
                *source = replay;
                rewired += 1;
            }
        }
    }
    rewired
}

/// Wires every input of `config`'s own uses that reads a replay subject of DT
/// `source` back to the PT telemetry it replays.
fn unwire_replays(config: &mut DtConfig, source: &str) {
    for use_ in &mut config.assets {
        for wired in use_.inputs.values_mut() {
            let live = match subject::parse_dt_replay(wired) {
                Ok((dt, pt, measurement)) if dt == source => subject::telemetry(pt, measurement),
                _ => continue,
            };
            if let Ok(live) = live {
                *wired = live;
            }
        }
    }
}

/// Names `problem` as the request wrote it: a parameter it overrides
/// (`assets[0].params.factor` → `params.doubler.factor`), the fork's id (`id` → `as`).
fn name_by_request(problem: &mut Problem, config: &DtConfig, overrides: &Overrides) {
    if problem.path == "id" {
        problem.path = "as".into();
        return;
    }
    for (i, use_) in config.assets.iter().enumerate() {
        let Some(params) = overrides.get(&use_.name) else {
            continue;
        };
        for name in params.keys() {
            if problem.path == format!("assets[{i}].params.{name}") {
                problem.path = format!("params.{}.{name}", use_.name);
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dtaas_schemas::codec::decode;

    fn config() -> DtConfig {
        decode(
            None,
            br#"{"id":"f","assets":[{"name":"d","asset":"doubler",
                "inputs":{"x":"dtaas.v1.tel.pt9.val","y":"other.y","z":"dtaas.v1.dt.s.out.q"}}]}"#,
        )
        .unwrap()
    }

    #[test]
    fn only_telemetry_inputs_are_rewired_to_the_forks_replay() {
        let mut c = config();
        assert_eq!(rewire_telemetry(&mut c), 1);
        let inputs = &c.assets[0].inputs;
        assert_eq!(inputs["x"], "dtaas.v1.dt.f.replay.pt9.val");
        assert_eq!(inputs["y"], "other.y");
        assert_eq!(inputs["z"], "dtaas.v1.dt.s.out.q");
    }

    #[test]
    fn a_fork_of_a_fork_reads_its_own_replay() {
        let mut c = config();
        rewire_telemetry(&mut c);
        c.id = "g".into();
        unwire_replays(&mut c, "f");
        assert_eq!(c.assets[0].inputs["x"], "dtaas.v1.tel.pt9.val");
        rewire_telemetry(&mut c);
        assert_eq!(c.assets[0].inputs["x"], "dtaas.v1.dt.g.replay.pt9.val");
    }

    #[test]
    fn overrides_and_windows_name_their_problems() {
        let mut c = config();
        let mut found = Vec::new();
        let overrides: Overrides =
            serde_json::from_str(r#"{"d":{"factor":5},"nope":{"a":1}}"#).unwrap();
        override_params(&mut c, &overrides, &mut found);
        assert_eq!(c.assets[0].params["factor"], 5);
        assert_eq!(found[0].path, "params.nope");
        assert!(found[0].message.contains("there are: d"), "{}", found[0]);
        let bad = ReplayWindow {
            from: "-1m".into(),
            to: "-2m".into(),
            speed: Some(0.0),
        };
        let mut found = Vec::new();
        let replay = window(&bad, 600_000_000_000, &mut found);
        assert_eq!(replay.from, 540_000_000_000);
        let paths: Vec<&str> = found.iter().map(|p| p.path.as_str()).collect();
        assert_eq!(paths, ["replay.from", "replay.speed"]);
        let mut p = Problem {
            path: "assets[0].params.factor".into(),
            message: "30 is not within 1..=10".into(),
        };
        name_by_request(&mut p, &c, &overrides);
        assert_eq!(p.path, "params.d.factor");
    }
}
