//! What the server itself saw during an append scenario, read from its `/metrics`
//! before and after: how often the WAL synced, how long a sync took, how many events
//! each covered, and how long an append took inside the server. Beside the client's
//! figures it says where an append's time goes: in the commit (the sync and the wait
//! for it) or around the server (the client, the sockets, the scheduler).

use std::net::SocketAddr;

use anyhow::{bail, Result};

use super::client::{Call, Connection};

/// The counters read from one `/metrics` page; each is summed over its labels.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Counters {
    /// `allsource_wal_fsync_duration_seconds_count`: syncs so far.
    pub syncs: f64,
    /// `allsource_wal_fsync_duration_seconds_sum`: their total time.
    pub sync_seconds: f64,
    /// `allsource_wal_events_per_sync_sum`: events the syncs covered.
    pub synced_events: f64,
    /// `allsource_append_duration_seconds_count`: append requests answered.
    pub appends: f64,
    /// `allsource_append_duration_seconds_sum`: their total time in the server.
    pub append_seconds: f64,
}

impl Counters {
    /// The counters in a Prometheus text page. Metrics it does not know, buckets and
    /// comments are skipped; a line that does not parse is skipped too.
    pub fn parse(page: &str) -> Counters {
        let mut counters = Counters::default();
        for line in page.lines().filter(|line| !line.starts_with('#')) {
            let Some((series, value)) = line.rsplit_once(' ') else { continue };
            let Ok(value) = value.parse::<f64>() else { continue };
            let name = series.split('{').next().unwrap_or(series);
            let slot = match name {
                "allsource_wal_fsync_duration_seconds_count" => &mut counters.syncs,
                "allsource_wal_fsync_duration_seconds_sum" => &mut counters.sync_seconds,
                "allsource_wal_events_per_sync_sum" => &mut counters.synced_events,
                "allsource_append_duration_seconds_count" => &mut counters.appends,
                "allsource_append_duration_seconds_sum" => &mut counters.append_seconds,
                _ => continue,
            };
            *slot += value;
        }
        counters
    }

    /// Reads the server's `/metrics` over a connection of its own.
    pub async fn read(addr: SocketAddr) -> Result<Counters> {
        let mut connection = Connection::open(addr).await?;
        let (status, body) = connection.send(&Call::get("/metrics".to_string())).await?;
        if status.as_u16() != 200 {
            bail!("GET /metrics answered {status}");
        }
        Ok(Counters::parse(&String::from_utf8_lossy(&body)))
    }
}

/// What happened in the server between two readings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ServerView {
    /// WAL syncs per second.
    pub syncs_per_second: f64,
    /// The mean time of one sync (`fdatasync`), in µs.
    pub sync_mean_us: f64,
    /// Events per sync: the group commit's mean group.
    pub events_per_sync: f64,
    /// The mean time of an append request inside the server (from the request guard to
    /// the response), in µs.
    pub append_mean_us: f64,
}

impl ServerView {
    /// The view between `before` and `after`, `seconds` apart; `None` when no sync or no
    /// append happened in between (`--sync none` makes no syncs).
    pub fn between(before: &Counters, after: &Counters, seconds: f64) -> Option<ServerView> {
        let syncs = after.syncs - before.syncs;
        let appends = after.appends - before.appends;
        if syncs <= 0.0 || appends <= 0.0 || seconds <= 0.0 {
            return None;
        }
        Some(ServerView {
            syncs_per_second: syncs / seconds,
            sync_mean_us: (after.sync_seconds - before.sync_seconds) / syncs * 1e6,
            events_per_sync: (after.synced_events - before.synced_events) / syncs,
            append_mean_us: (after.append_seconds - before.append_seconds) / appends * 1e6,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Lines as the server writes them (labels, buckets and comments included).
    const PAGE: &str = "\
# HELP allsource_append_duration_seconds How long an append took.
# TYPE allsource_append_duration_seconds histogram
allsource_append_duration_seconds_bucket{route=\"/api/v1/events\",le=\"0.001\"} 90
allsource_append_duration_seconds_sum{route=\"/api/v1/events\"} 0.25
allsource_append_duration_seconds_count{route=\"/api/v1/events\"} 100
allsource_append_duration_seconds_sum{route=\"/api/v1/events/batch\"} 0.75
allsource_append_duration_seconds_count{route=\"/api/v1/events/batch\"} 100
allsource_wal_fsync_duration_seconds_bucket{le=\"0.0005\"} 40
allsource_wal_fsync_duration_seconds_sum 0.0125
allsource_wal_fsync_duration_seconds_count 50
allsource_wal_events_per_sync_sum 1000.0
allsource_wal_events_per_sync_count 50
allsource_events_stored 10100
not a metric line
";

    #[test]
    fn counters_from_a_metrics_page() {
        let counters = Counters::parse(PAGE);
        assert_eq!(
            counters,
            Counters {
                syncs: 50.0,
                sync_seconds: 0.0125,
                synced_events: 1000.0,
                appends: 200.0,
                append_seconds: 1.0
            }
        );
        assert_eq!(Counters::parse(""), Counters::default());
    }

    #[test]
    fn the_view_between_two_readings() {
        let before = Counters {
            syncs: 10.0,
            sync_seconds: 0.002,
            synced_events: 100.0,
            appends: 100.0,
            append_seconds: 0.1,
        };
        let after = Counters::parse(PAGE);
        let view = ServerView::between(&before, &after, 2.0).unwrap();
        assert_eq!(view.syncs_per_second, 20.0);
        assert!((view.sync_mean_us - 262.5).abs() < 1e-6, "{view:?}");
        assert_eq!(view.events_per_sync, 22.5);
        assert!((view.append_mean_us - 9_000.0).abs() < 1e-6, "{view:?}");
        // No sync in between (`--sync none`), or nothing appended: no view.
        assert_eq!(ServerView::between(&after, &after, 2.0), None);
        let no_syncs = Counters { syncs: after.syncs, ..before };
        assert_eq!(ServerView::between(&no_syncs, &after, 2.0), None);
    }
}
