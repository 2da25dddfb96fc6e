//! The server's configuration: command-line flags, each with an environment variable.
//!
//! Flags win over environment variables, which win over the defaults. `allsource --help`
//! lists every option.

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Parser;
use tokio::sync::Semaphore;

use crate::auth::{ApiKey, ApiKeys};
use crate::limits;
use crate::options::AppOptions;
use crate::stream::{SubscriptionSettings, Subscriptions};
use crate::write_timeout::{WRITE_TIMEOUT_DEFAULT, WRITE_TIMEOUT_MAX};

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
#[command(name = "allsource", version, about = "AllSource event store: the HTTP/JSON server.", long_about = None)]
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

    /// How log lines are written to stderr: `text` for people, `json` for log
    /// collectors (one object a line, with the request span's fields).
    #[arg(long, env = "ALLSOURCE_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// An API key and what it may do, as KEY:ROLE; ROLE is `read` or `write` (which
    /// can also read). Repeatable; the environment variable takes a comma-separated
    /// list. With any key set (here or in --api-keys-file), every route but /health
    /// and /openapi.json needs `Authorization: Bearer KEY`. Keys are visible ASCII
    /// without `,`; use long random ones (e.g. `openssl rand -hex 32`).
    #[arg(
        long = "api-key",
        env = "ALLSOURCE_API_KEYS",
        value_name = "KEY:ROLE",
        value_delimiter = ',',
        hide_env_values = true,
        value_parser = Secret::parse
    )]
    pub api_keys: Vec<Secret>,

    /// A file of API keys, one KEY:ROLE a line; blank lines and lines starting with
    /// `#` are skipped. Adds to --api-key.
    #[arg(long, env = "ALLSOURCE_API_KEYS_FILE", value_name = "FILE")]
    pub api_keys_file: Option<PathBuf>,

    /// Serve HTTPS with this certificate chain (PEM, the server's certificate first);
    /// needs --tls-key.
    #[arg(long, env = "ALLSOURCE_TLS_CERT", value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// The private key (PEM) of --tls-cert; needs --tls-cert.
    #[arg(long, env = "ALLSOURCE_TLS_KEY", value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// The time limit of a request, in milliseconds; past it the client gets `504
    /// Timeout`. Subscriptions are not limited.
    #[arg(
        long,
        env = "ALLSOURCE_REQUEST_TIMEOUT_MS",
        value_name = "MS",
        default_value_t = limits::REQUEST_TIMEOUT_DEFAULT.as_millis() as u64,
        value_parser = clap::value_parser!(u64).range(1..)
    )]
    pub request_timeout_ms: u64,

    /// How many requests may be in flight at once; one more is refused at once with
    /// `503 Overloaded` and `Retry-After`, not queued. Subscriptions and /health do not
    /// count.
    #[arg(
        long,
        env = "ALLSOURCE_CONCURRENT_REQUESTS_MAX",
        value_name = "N",
        default_value_t = limits::CONCURRENT_REQUESTS_DEFAULT,
        value_parser = concurrent_requests_max
    )]
    pub concurrent_requests_max: usize,

    /// How long, in milliseconds, a write to a client may wait without the client
    /// reading any of it; past that the connection is closed (a stream's slot with
    /// it). Every write the client takes bytes of starts the count again, so a slow
    /// reader of a long response is not cut. From 1 to 86400000 (a day).
    #[arg(
        long,
        env = "ALLSOURCE_WRITE_TIMEOUT_MS",
        value_name = "MS",
        default_value_t = WRITE_TIMEOUT_DEFAULT.as_millis() as u64,
        value_parser = clap::value_parser!(u64).range(1..=WRITE_TIMEOUT_MAX.as_millis() as u64)
    )]
    pub write_timeout_ms: u64,

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
    /// Every API key of the configuration: from --api-key (or `ALLSOURCE_API_KEYS`)
    /// and from --api-keys-file. A malformed key is an error that says where it is (the
    /// item or the line number), never what it is.
    pub fn api_keys(&self) -> Result<ApiKeys, ConfigError> {
        let mut keys = Vec::new();
        for (index, secret) in self.api_keys.iter().enumerate() {
            let key = ApiKey::parse(&secret.0).map_err(|e| {
                ConfigError(format!("API key {} of --api-key or ALLSOURCE_API_KEYS: {e}", index + 1))
            })?;
            keys.push(key);
        }
        if let Some(path) = &self.api_keys_file {
            let text = std::fs::read_to_string(path).map_err(|e| {
                ConfigError(format!("could not read --api-keys-file {}: {e}", path.display()))
            })?;
            keys.extend(parse_keys_file(&text).map_err(|e| ConfigError(format!("{}: {e}", path.display())))?);
        }
        ApiKeys::new(keys).map_err(|e| ConfigError(format!("API keys: {e}")))
    }

    /// The certificate and key files, if TLS is on (clap makes sure both or neither
    /// are given).
    pub fn tls_files(&self) -> Option<(&Path, &Path)> {
        match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => Some((cert, key)),
            _ => None,
        }
    }

    /// The router's settings: keys and limits.
    pub fn app_options(&self) -> Result<AppOptions, ConfigError> {
        Ok(AppOptions::default()
            .with_api_keys(self.api_keys()?)
            .with_request_timeout(Duration::from_millis(self.request_timeout_ms))
            .with_concurrent_requests_max(self.concurrent_requests_max)
            .with_subscriptions(Subscriptions::new(self.subscription_settings())))
    }

    /// How long a write to a connection may make no progress; see `--write-timeout-ms`.
    pub fn write_timeout(&self) -> Duration {
        Duration::from_millis(self.write_timeout_ms)
    }

    /// The settings of subscriptions.
    pub fn subscription_settings(&self) -> SubscriptionSettings {
        SubscriptionSettings::default()
            .with_heartbeat(Duration::from_millis(self.heartbeat_ms))
            .with_subscribers_max(self.max_subscribers)
            .with_buffer_bytes(usize::try_from(self.subscriber_buffer_bytes).unwrap_or(usize::MAX))
            .with_stall_grace(Duration::from_millis(self.subscriber_stall_ms))
    }
}

/// The keys of an API keys file: one `KEY:ROLE` a line; blank lines and lines whose
/// first non-blank character is `#` are skipped. An error names the line (counted
/// from 1), not the key.
pub fn parse_keys_file(text: &str) -> Result<Vec<ApiKey>, ConfigError> {
    let mut keys = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        keys.push(ApiKey::parse(line).map_err(|e| ConfigError(format!("line {}: {e}", index + 1)))?);
    }
    Ok(keys)
}

/// A configuration that cannot be used: the message says what and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError(String);

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigError {}

/// A secret from the command line or the environment (an API key as `KEY:ROLE`),
/// checked later by [`Config::api_keys`], whose errors do not repeat it (clap's
/// would). Its `Debug` prints `***`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Takes any text: clap must not refuse it, since its message would echo it.
    fn parse(text: &str) -> Result<Secret, std::convert::Infallible> {
        Ok(Secret(text.to_string()))
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

fn concurrent_requests_max(text: &str) -> Result<usize, String> {
    match text.parse::<usize>() {
        Ok(n) if (1..=Semaphore::MAX_PERMITS).contains(&n) => Ok(n),
        _ => Err(format!("must be an integer in 1..={}", Semaphore::MAX_PERMITS)),
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

/// How log lines are written; see `--log-format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// One line of text per event, its span's fields before it.
    Text,
    /// One JSON object per event: `timestamp`, `level`, `fields`, `target`, `span`.
    Json,
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;
    use crate::auth::Role;

    #[test]
    fn help_says_what_the_program_is_not_its_rustdoc() {
        // The type's documentation has a code example for rustdoc; `--help` must not
        // print it.
        let help = Config::command().render_long_help().to_string();
        assert!(help.starts_with("AllSource event store: the HTTP/JSON server."), "{help}");
        assert!(!help.contains("```") && !help.contains("parse_from"), "{help}");
        assert!(help.contains("--data-dir"));
    }

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
    fn log_format() {
        let parse = |args: &[&str]| Config::try_parse_from([&["allsource"], args].concat());
        assert_eq!(parse(&[]).unwrap().log_format, LogFormat::Text);
        assert_eq!(parse(&["--log-format", "json"]).unwrap().log_format, LogFormat::Json);
        assert_eq!(parse(&["--log-format", "text"]).unwrap().log_format, LogFormat::Text);
        assert!(parse(&["--log-format", "xml"]).is_err());
    }

    #[test]
    fn api_keys_from_flags_and_environment() {
        let config =
            Config::try_parse_from(["allsource", "--api-key", "r-key:read", "--api-key", "w-key:write"])
                .unwrap();
        let keys = config.api_keys().unwrap();
        assert_eq!(keys.len(), 2);
        assert_eq!(keys.role_of(b"r-key"), Some(Role::Read));
        assert_eq!(keys.role_of(b"w-key"), Some(Role::Write));
        assert!(Config::try_parse_from(["allsource"]).unwrap().api_keys().unwrap().is_empty());

        // The environment variable's list, as clap splits it.
        let config = Config::try_parse_from(["allsource", "--api-key", "e1:read,e2:write"]).unwrap();
        let keys = config.api_keys().unwrap();
        assert_eq!((keys.role_of(b"e1"), keys.role_of(b"e2")), (Some(Role::Read), Some(Role::Write)));

        // A bad key is refused after clap, by position, without echoing it.
        let config =
            Config::try_parse_from(["allsource", "--api-key", "ok:read", "--api-key", "s3cr3t:admin"])
                .unwrap();
        let error = config.api_keys().unwrap_err().to_string();
        assert!(error.contains("API key 2"), "{error}");
        assert!(!error.contains("s3cr3t"), "{error}");
        // Debug (which clap's derive gives Config) hides them too.
        assert!(!format!("{config:?}").contains("s3cr3t"));
        assert!(!format!("{:?}", config.app_options()).contains("ok"));

        let config =
            Config::try_parse_from(["allsource", "--api-key", "k:read", "--api-key", "k:write"]).unwrap();
        assert!(config.api_keys().unwrap_err().to_string().contains("different roles"));
    }

    #[test]
    fn api_keys_from_environment_variable() {
        // A variable no other test sets, read through clap's `env` support the same way
        // as ALLSOURCE_API_KEYS (set here would race with other tests).
        // clap reads the variable when the argument is defined.
        std::env::set_var("ALLSOURCE_TEST_API_KEYS_ONLY", "env-r:read, env-w:write");
        let command = Config::command().mut_arg("api_keys", |arg| arg.env("ALLSOURCE_TEST_API_KEYS_ONLY"));
        let matches = command.try_get_matches_from(["allsource"]).unwrap();
        let config = <Config as clap::FromArgMatches>::from_arg_matches(&matches).unwrap();
        let keys = config.api_keys().unwrap();
        assert_eq!(keys.role_of(b"env-r"), Some(Role::Read));
        assert_eq!(keys.role_of(b"env-w"), Some(Role::Write));
        assert_eq!(keys.len(), 2);
    }

    #[test]
    fn api_keys_file() {
        let keys = parse_keys_file("# readers\n\nreader-1:read\n  writer-1:write  \r\n   # end\n").unwrap();
        assert_eq!(keys.iter().map(ApiKey::role).collect::<Vec<_>>(), [Role::Read, Role::Write]);

        let error = parse_keys_file("# c\n\nfine:read\ntop-secret-key:owner\n").unwrap_err().to_string();
        assert!(error.starts_with("line 4: "), "{error}");
        assert!(!error.contains("top-secret"), "{error}");
        let error = parse_keys_file("no-role-secret\n").unwrap_err().to_string();
        assert!(error.starts_with("line 1: ") && !error.contains("no-role-secret"), "{error}");

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys");
        std::fs::write(&path, "f-key:write\n").unwrap();
        let path_text = path.to_str().unwrap();
        let config =
            Config::try_parse_from(["allsource", "--api-keys-file", path_text, "--api-key", "c-key:read"])
                .unwrap();
        let keys = config.api_keys().unwrap();
        assert_eq!((keys.role_of(b"f-key"), keys.role_of(b"c-key")), (Some(Role::Write), Some(Role::Read)));

        std::fs::write(&path, "f-key:write\nbad key:read\n").unwrap();
        let error = config.api_keys().unwrap_err().to_string();
        assert!(error.contains(path_text) && error.contains("line 2"), "{error}");
        let missing = dir.path().join("missing");
        let config =
            Config::try_parse_from(["allsource", "--api-keys-file", missing.to_str().unwrap()]).unwrap();
        assert!(config.api_keys().unwrap_err().to_string().contains("could not read"));
    }

    #[test]
    fn tls_needs_both_files() {
        assert!(Config::try_parse_from(["allsource", "--tls-cert", "c.pem"]).is_err());
        assert!(Config::try_parse_from(["allsource", "--tls-key", "k.pem"]).is_err());
        let config =
            Config::try_parse_from(["allsource", "--tls-cert", "c.pem", "--tls-key", "k.pem"]).unwrap();
        assert_eq!(config.tls_files(), Some((Path::new("c.pem"), Path::new("k.pem"))));
        assert_eq!(Config::try_parse_from(["allsource"]).unwrap().tls_files(), None);
    }

    #[test]
    fn limits() {
        let config = Config::try_parse_from(["allsource"]).unwrap();
        let options = config.app_options().unwrap();
        assert_eq!(options.request_timeout, limits::REQUEST_TIMEOUT_DEFAULT);
        assert_eq!(options.concurrent_requests_max, limits::CONCURRENT_REQUESTS_DEFAULT);
        let config = Config::try_parse_from([
            "allsource",
            "--request-timeout-ms",
            "250",
            "--concurrent-requests-max",
            "3",
        ])
        .unwrap();
        let options = config.app_options().unwrap();
        assert_eq!(options.request_timeout, Duration::from_millis(250));
        assert_eq!(options.concurrent_requests_max, 3);
        assert!(Config::try_parse_from(["allsource", "--request-timeout-ms", "0"]).is_err());
        assert!(Config::try_parse_from(["allsource", "--concurrent-requests-max", "0"]).is_err());
        assert!(Config::try_parse_from(["allsource", "--concurrent-requests-max", "x"]).is_err());
    }

    #[test]
    fn write_timeout() {
        let parse = |args: &[&str]| Config::try_parse_from([&["allsource"], args].concat());
        assert_eq!(parse(&[]).unwrap().write_timeout(), WRITE_TIMEOUT_DEFAULT);
        assert_eq!(
            parse(&["--write-timeout-ms", "250"]).unwrap().write_timeout(),
            Duration::from_millis(250)
        );
        let max = WRITE_TIMEOUT_MAX.as_millis().to_string();
        assert_eq!(parse(&["--write-timeout-ms", &max]).unwrap().write_timeout(), WRITE_TIMEOUT_MAX);
        let past_max = (WRITE_TIMEOUT_MAX.as_millis() + 1).to_string();
        for bad in ["0", "-1", "x", "", past_max.as_str()] {
            assert!(parse(&["--write-timeout-ms", bad]).is_err(), "{bad:?}");
        }
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
        let options = config.app_options().unwrap();
        let want = SubscriptionSettings::default()
            .with_heartbeat(Duration::from_millis(100))
            .with_subscribers_max(0)
            .with_buffer_bytes(10)
            .with_stall_grace(Duration::from_millis(200));
        assert_eq!(options.subscriptions.settings(), &want);
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
