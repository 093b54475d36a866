//! Maps MQTT topics to PT, measurement and tags, by the default map or custom ones.

use std::collections::BTreeMap;

use dtaas_schemas::excerpt::excerpt;

use crate::config::{BridgeConfig, Format, Source, TimeUnit, TopicMapConfig};

/// The default telemetry topic filter: `dtaas/pt/<pt>/tel/<measurement>`.
pub const DEFAULT_FILTER: &str = "dtaas/pt/+/tel/+";
/// Device replies to commands: `dtaas/pt/<pt>/cmd/<command>/ack`.
pub const ACK_FILTER: &str = "dtaas/pt/+/cmd/+/ack";

/// The MQTT topic a command for `pt` named `command` is published on.
pub fn command_topic(pt: &str, command: &str) -> String {
    format!("dtaas/pt/{pt}/cmd/{command}")
}

/// The MQTT topic a device acknowledges command `command` on.
pub fn ack_topic(pt: &str, command: &str) -> String {
    format!("{}/ack", command_topic(pt, command))
}

/// Every command for `pt` (not the acknowledgements): `dtaas/pt/<pt>/cmd/+`.
pub fn command_filter(pt: &str) -> String {
    command_topic(pt, "+")
}

/// The MQTT topic of measurement `measurement` of `pt` in the default map.
pub fn telemetry_topic(pt: &str, measurement: &str) -> String {
    format!("dtaas/pt/{pt}/tel/{measurement}")
}

/// Where one MQTT message belongs.
#[derive(Debug, Clone, PartialEq)]
pub struct Target<'a> {
    pub pt: &'a str,
    pub measurement: &'a str,
    pub tags: BTreeMap<String, String>,
    pub map: &'a TopicMapConfig,
}

/// What an MQTT topic is.
#[derive(Debug, PartialEq)]
pub enum Route<'a> {
    /// Telemetry, mapped.
    Telemetry(Target<'a>),
    /// A device's reply to a command.
    CommandAck { pt: &'a str, command: &'a str },
    /// No map matches, or a mapped level is missing.
    Unmapped(Unmapped),
}

/// Why a topic makes no telemetry; `topic` is an excerpt.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Unmapped {
    #[error("topic {topic} matches no topic map")]
    NoMap { topic: String },
    /// `what` is the PT id, the measurement or a tag.
    #[error("topic {topic} has no level {level} for the {what}")]
    NoLevel {
        topic: String,
        level: usize,
        what: String,
    },
}

/// The compiled set of maps, tried in order.
#[derive(Debug, Clone)]
pub struct TopicMaps {
    maps: Vec<TopicMapConfig>,
}

impl TopicMaps {
    /// Custom maps first, then the default map when enabled.
    pub fn new(config: &BridgeConfig) -> Self {
        let mut maps = config.maps.clone();
        if config.default_map {
            maps.push(TopicMapConfig {
                filter: DEFAULT_FILTER.into(),
                pt: Source::Level(2),
                measurement: Source::Level(4),
                tags: BTreeMap::new(),
                format: Format::Auto,
                timestamp_field: "ts".into(),
                timestamp_unit: TimeUnit::Auto,
                id_field: None,
            });
        }
        Self { maps }
    }

    /// The filters to subscribe to.
    pub fn filters(&self) -> impl Iterator<Item = &str> {
        self.maps
            .iter()
            .map(|m| m.filter.as_str())
            .chain([ACK_FILTER])
    }

    /// Routes `topic`.
    pub fn route<'a>(&'a self, topic: &'a str) -> Route<'a> {
        let levels: Vec<&str> = topic.split('/').collect();
        if matches(ACK_FILTER, &levels) {
            return Route::CommandAck {
                pt: levels[2],
                command: levels[4],
            };
        }
        let Some(map) = self.maps.iter().find(|m| matches(&m.filter, &levels)) else {
            return Route::Unmapped(Unmapped::NoMap {
                topic: excerpt(topic),
            });
        };
        let missing = |level: usize, what: String| Unmapped::NoLevel {
            topic: excerpt(topic),
            level,
            what,
        };
        let pick = |what: &str, source: &'a Source| -> Result<&'a str, Unmapped> {
            match source {
                Source::Fixed(text) => Ok(text.as_str()),
                Source::Level(i) => levels
                    .get(*i)
                    .copied()
                    .filter(|l| !l.is_empty())
                    .ok_or_else(|| missing(*i, what.to_owned())),
            }
        };
        let result = (|| {
            let pt = pick("PT id", &map.pt)?;
            let measurement = pick("measurement", &map.measurement)?;
            let mut tags = BTreeMap::new();
            for (name, level) in &map.tags {
                let value = levels
                    .get(*level)
                    .filter(|l| !l.is_empty())
                    .ok_or_else(|| missing(*level, format!("tag {name:?}")))?;
                tags.insert(name.clone(), (*value).to_owned());
            }
            Ok::<_, Unmapped>(Target {
                pt,
                measurement,
                tags,
                map,
            })
        })();
        match result {
            Ok(target) => Route::Telemetry(target),
            Err(reason) => Route::Unmapped(reason),
        }
    }
}

/// MQTT filter matching with `+` and `#`.
fn matches(filter: &str, levels: &[&str]) -> bool {
    let mut i = 0;
    for part in filter.split('/') {
        match part {
            "#" => return true,
            "+" if i < levels.len() => {}
            _ if levels.get(i) == Some(&part) => {}
            _ => return false,
        }
        i += 1;
    }
    i == levels.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_map_and_acks() {
        let maps = TopicMaps::new(&BridgeConfig::default());
        let Route::Telemetry(t) = maps.route("dtaas/pt/inc1/tel/temp") else {
            panic!()
        };
        assert_eq!((t.pt, t.measurement), ("inc1", "temp"));
        assert_eq!(
            maps.route("dtaas/pt/inc1/cmd/heat/ack"),
            Route::CommandAck {
                pt: "inc1",
                command: "heat"
            }
        );
        assert!(matches!(
            maps.route("dtaas/pt/inc1/tel/temp/extra"),
            Route::Unmapped(r) if r.to_string().contains("matches no topic map")
        ));
        assert_eq!(command_topic("p", "c"), "dtaas/pt/p/cmd/c");
    }

    #[test]
    fn custom_map_with_tags_and_hash() {
        let config = BridgeConfig {
            maps: vec![TopicMapConfig {
                filter: "factory/+/+/#".into(),
                pt: Source::Level(1),
                measurement: Source::Fixed("machine".into()),
                tags: BTreeMap::from([("line".into(), 2)]),
                format: Format::Json,
                timestamp_field: "ts".into(),
                timestamp_unit: TimeUnit::Ms,
                id_field: None,
            }],
            ..BridgeConfig::default()
        };
        let maps = TopicMaps::new(&config);
        let Route::Telemetry(t) = maps.route("factory/m7/l2/data") else {
            panic!()
        };
        assert_eq!((t.pt, t.measurement), ("m7", "machine"));
        assert_eq!(t.tags["line"], "l2");
        assert_eq!(maps.filters().count(), 3);
    }
}
