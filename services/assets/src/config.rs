//! The `[assets]` table of the configuration file and the assets worker's environment.

use dtaas_runtime::config::env_override;
use dtaas_runtime::{Config, ConfigError};
use serde::Deserialize;

/// The `[assets]` table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AssetsConfig {
    /// Largest file an asset may hold, in bytes [default: 1 GiB]; env
    /// `DTAAS_ASSETS_MAX_FILE_SIZE`. Uploads of larger files are refused at once.
    pub max_file_size: u64,
    /// Users who see and manage every asset [default: `["admin"]`].
    pub admins: Vec<String>,
    /// File readers kept open between the chunks of sequential fetches, so reading a
    /// file chunk by chunk costs one pass, not one pass per chunk [default: 32].
    pub fetch_readers: usize,
}

impl Default for AssetsConfig {
    fn default() -> Self {
        Self {
            max_file_size: 1 << 30,
            admins: vec!["admin".into()],
            fetch_readers: 32,
        }
    }
}

impl AssetsConfig {
    /// The `[assets]` table of `config` with the environment applied.
    pub fn load(config: &Config) -> Result<Self, ConfigError> {
        let mut assets: Self = config.section(crate::WORKER)?;
        env_override(&mut assets.max_file_size, "DTAAS_ASSETS_MAX_FILE_SIZE")?;
        assets.fetch_readers = assets.fetch_readers.clamp(1, 1024);
        Ok(assets)
    }

    /// Whether `user` sees every asset.
    pub fn is_admin(&self, user: &str) -> bool {
        self.admins.iter().any(|a| a == user)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_is_read_and_typos_named() {
        let text = "[assets]\nmax_file_size = 1000\nadmins = [\"root\"]\n";
        let config = Config::from_toml(text, "t.toml", &|_| None).unwrap();
        let assets: AssetsConfig = config.section("assets").unwrap();
        assert_eq!(assets.max_file_size, 1000);
        assert!(assets.is_admin("root") && !assets.is_admin("admin"));
        let config = Config::from_toml("[assets]\nmax_size = 1", "t.toml", &|_| None).unwrap();
        let err = config.section::<AssetsConfig>("assets").unwrap_err();
        assert!(err.to_string().contains("max_size"), "{err}");
    }
}
