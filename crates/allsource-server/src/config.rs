//! The server's configuration: command-line flags, each with an environment variable.
//!
//! Flags win over environment variables, which win over the defaults. `allsource --help`
//! lists every option.

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

use crate::stream::SubscriptionSettings;

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

    /// Subscriptions (GET /api/v1/events/stream): a heartbeat line goes out after this
    /// many milliseconds without any other line.
    #[arg(
        long,
        env = "ALLSOURCE_HEARTBEAT_MS",
        value_name = "MS",
        default_value_t = SubscriptionSettings::default().heartbeat.as_millis() as u64,
        value_parser = clap::value_parser!(u64).range(1..)
    )]
    pub heartbeat_ms: u64,

    /// The most subscriptions open at once; one more is refused with `429
    /// TooManySubscribers`.
    #[arg(
        long,
        env = "ALLSOURCE_MAX_SUBSCRIBERS",
        value_name = "N",
        default_value_t = SubscriptionSettings::default().subscribers_max
    )]
    pub max_subscribers: usize,

    /// The most bytes of lines queued for one subscriber's client (one line may go
    /// over). When the client reads too slowly, the stream waits, then closes.
    #[arg(
        long,
        env = "ALLSOURCE_SUBSCRIBER_BUFFER_BYTES",
        value_name = "BYTES",
        default_value_t = SubscriptionSettings::default().buffer_bytes as u64,
        value_parser = clap::value_parser!(u64).range(1..=u32::MAX as u64)
    )]
    pub subscriber_buffer_bytes: u64,

    /// How long a subscriber's buffer may stay full, in milliseconds, before its stream
    /// is closed with an error line `SubscriberTooSlow`.
    #[arg(
        long,
        env = "ALLSOURCE_SUBSCRIBER_STALL_MS",
        value_name = "MS",
        default_value_t = SubscriptionSettings::default().stall_grace.as_millis() as u64,
        value_parser = clap::value_parser!(u64).range(1..)
    )]
    pub subscriber_stall_ms: u64,
}

impl Config {
    /// The settings of subscriptions.
    pub fn subscription_settings(&self) -> SubscriptionSettings {
        SubscriptionSettings::default()
            .with_heartbeat(Duration::from_millis(self.heartbeat_ms))
            .with_subscribers_max(self.max_subscribers)
            .with_buffer_bytes(usize::try_from(self.subscriber_buffer_bytes).unwrap_or(usize::MAX))
            .with_stall_grace(Duration::from_millis(self.subscriber_stall_ms))
    }
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
    fn subscriptions() {
        let config = Config::try_parse_from(["allsource"]).unwrap();
        assert_eq!(config.subscription_settings(), SubscriptionSettings::default());
        assert_eq!(config.subscription_settings().heartbeat, Duration::from_secs(15));
        let config = Config::try_parse_from([
            "allsource",
            "--heartbeat-ms",
            "100",
            "--max-subscribers",
            "0",
            "--subscriber-buffer-bytes",
            "10",
            "--subscriber-stall-ms",
            "200",
        ])
        .unwrap();
        let want = SubscriptionSettings::default()
            .with_heartbeat(Duration::from_millis(100))
            .with_subscribers_max(0)
            .with_buffer_bytes(10)
            .with_stall_grace(Duration::from_millis(200));
        assert_eq!(config.subscription_settings(), want);
        for bad in [
            ["--heartbeat-ms", "0"],
            ["--subscriber-buffer-bytes", "0"],
            ["--subscriber-buffer-bytes", "4294967296"],
            ["--subscriber-stall-ms", "0"],
            ["--max-subscribers", "-1"],
        ] {
            assert!(Config::try_parse_from(["allsource", bad[0], bad[1]]).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn clap_definition_is_consistent() {
        Config::command().debug_assert();
    }
}
