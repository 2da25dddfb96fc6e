//! The server's configuration: command-line flags, each with an environment variable.
//!
//! Flags win over environment variables, which win over the defaults. `allsource --help`
//! lists every option.

use std::path::PathBuf;

use clap::Parser;

/// How to run the server: where to listen and where to keep the events.
///
/// ```
/// use allsource_server::Config;
/// use clap::Parser;
///
/// let config = Config::parse_from(["allsource", "--addr", "127.0.0.1:0", "--in-memory"]);
/// assert_eq!(config.addr, "127.0.0.1:0");
/// assert!(config.in_memory);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Parser)]
#[command(name = "allsource", version, about = "AllSource event store: the HTTP/JSON server.")]
pub struct Config {
    /// The address to listen on, as HOST:PORT. Port 0 picks a free port; the address
    /// actually bound is logged as "listening on HOST:PORT".
    #[arg(long, env = "ALLSOURCE_ADDR", default_value = "127.0.0.1:8080", value_name = "HOST:PORT")]
    pub addr: String,

    /// The directory that holds the event log (created if missing; one server per
    /// directory, enforced by a lock file).
    #[arg(long, env = "ALLSOURCE_DATA_DIR", default_value = "./data", value_name = "DIR")]
    pub data_dir: PathBuf,

    /// Keep events in memory only (no persistence): everything is lost when the
    /// process exits.
    #[arg(long, env = "ALLSOURCE_IN_MEMORY")]
    pub in_memory: bool,

    /// When an append is acknowledged. `always`: after fdatasync of the write-ahead
    /// log record that holds it (survives kill -9 and power loss). `none`: once the
    /// record is written to the OS (survives kill -9 of the server, NOT a power loss
    /// or OS crash).
    #[arg(long, env = "ALLSOURCE_SYNC", value_enum, default_value_t = Sync::Always)]
    pub sync: Sync,
}

/// When an append is acknowledged; see `--sync`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Sync {
    /// After fdatasync of the record holding the event.
    Always,
    /// After the record is written to the OS, before it is synced.
    None,
}

impl From<Sync> for allsource_core::SyncMode {
    fn from(sync: Sync) -> Self {
        match sync {
            Sync::Always => allsource_core::SyncMode::Always,
            Sync::None => allsource_core::SyncMode::None,
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn defaults() {
        let config = Config::try_parse_from(["allsource"]).unwrap();
        assert_eq!(config.addr, "127.0.0.1:8080");
        assert_eq!(config.data_dir, PathBuf::from("./data"));
        assert!(!config.in_memory);
        assert_eq!(config.sync, Sync::Always);
    }

    #[test]
    fn flags() {
        let config =
            Config::try_parse_from(["allsource", "--addr", "0.0.0.0:9000", "--data-dir", "/var/lib/as"])
                .unwrap();
        assert_eq!(config.addr, "0.0.0.0:9000");
        assert_eq!(config.data_dir, PathBuf::from("/var/lib/as"));
        assert!(Config::try_parse_from(["allsource", "--bogus"]).is_err());
        let config = Config::try_parse_from(["allsource", "--sync", "none"]).unwrap();
        assert_eq!(config.sync, Sync::None);
        assert!(Config::try_parse_from(["allsource", "--sync", "sometimes"]).is_err());
    }

    #[test]
    fn clap_definition_is_consistent() {
        Config::command().debug_assert();
    }
}
