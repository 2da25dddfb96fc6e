//! The load client: keep-alive HTTP/1.1 connections (hyper's client connection over a
//! tokio TCP stream), each driving a closed loop of its own, and their latency
//! histograms.
//!
//! A closed loop sends its next request when the previous response has been read, so
//! the load adapts to the server instead of queueing without bound. Every loop ends at
//! its deadline or after [`CALLS_PER_CONNECTION_MAX`] requests, whichever comes first,
//! and every request at [`REQUEST_TIMEOUT`].

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::client::conn::http1;
use hyper::header::{ACCEPT, CONTENT_TYPE, HOST};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::task::JoinSet;

/// How long one request may take before the run fails.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// How long connecting may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// The most requests one connection sends in one loop.
pub const CALLS_PER_CONNECTION_MAX: u64 = 50_000_000;
/// The largest latency a histogram holds: one hour, in nanoseconds.
const LATENCY_NS_MAX: u64 = 3_600_000_000_000;

/// One request to send.
#[derive(Debug, Clone, PartialEq)]
pub struct Call {
    /// GET or POST.
    pub method: Method,
    /// Path and query string.
    pub path: String,
    /// The JSON body of a POST.
    pub body: Option<Bytes>,
    /// The `Accept` header, if any.
    pub accept: Option<&'static str>,
}

impl Call {
    /// `GET path`.
    pub fn get(path: String) -> Call {
        Call { method: Method::GET, path, body: None, accept: None }
    }

    /// `POST path` with a JSON body.
    pub fn post_json(path: &str, body: String) -> Call {
        Call { method: Method::POST, path: path.to_string(), body: Some(Bytes::from(body)), accept: None }
    }
}

/// One keep-alive connection to the server.
pub struct Connection {
    host: String,
    sender: http1::SendRequest<Full<Bytes>>,
    driver: tokio::task::JoinHandle<()>,
}

impl Connection {
    /// Connects to `addr` (with `TCP_NODELAY`, as a latency-minded client would).
    pub async fn open(addr: SocketAddr) -> Result<Connection> {
        let stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr))
            .await
            .map_err(|_| anyhow!("connecting to {addr} timed out"))?
            .with_context(|| format!("could not connect to {addr}"))?;
        stream.set_nodelay(true).context("could not set TCP_NODELAY")?;
        let (sender, connection) = http1::handshake(TokioIo::new(stream))
            .await
            .with_context(|| format!("HTTP handshake with {addr} failed"))?;
        let driver = tokio::spawn(async move {
            // Ends when the connection closes; an error shows up in the next request.
            let _ = connection.await;
        });
        Ok(Connection { host: addr.to_string(), sender, driver })
    }

    fn request(&self, call: &Call) -> Result<Request<Full<Bytes>>> {
        let mut builder =
            Request::builder().method(call.method.clone()).uri(&call.path).header(HOST, &self.host);
        if call.body.is_some() {
            builder = builder.header(CONTENT_TYPE, "application/json");
        }
        if let Some(accept) = call.accept {
            builder = builder.header(ACCEPT, accept);
        }
        builder
            .body(Full::new(call.body.clone().unwrap_or_default()))
            .with_context(|| format!("could not build the request {} {}", call.method, call.path))
    }

    /// Sends `call` and waits for the response head (the body is left to the caller).
    pub async fn start(&mut self, call: &Call) -> Result<Response<Incoming>> {
        let request = self.request(call)?;
        let exchange = async {
            self.sender.ready().await.context("the connection closed")?;
            self.sender.send_request(request).await.context("the request failed")
        };
        tokio::time::timeout(REQUEST_TIMEOUT, exchange).await.map_err(|_| {
            anyhow!("{} {} got no response within {REQUEST_TIMEOUT:?}", call.method, call.path)
        })?
    }

    /// Sends `call` and reads the whole response.
    pub async fn send(&mut self, call: &Call) -> Result<(StatusCode, Bytes)> {
        let started = Instant::now();
        let response = self.start(call).await?;
        let status = response.status();
        let left = REQUEST_TIMEOUT.saturating_sub(started.elapsed());
        let body = tokio::time::timeout(left, response.into_body().collect())
            .await
            .map_err(|_| {
                anyhow!("{} {}: the body did not end within {REQUEST_TIMEOUT:?}", call.method, call.path)
            })?
            .with_context(|| format!("{} {}: reading the body failed", call.method, call.path))?
            .to_bytes();
        Ok((status, body))
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.driver.abort();
    }
}

/// A small, fast, seeded random number generator (splitmix64): the load needs spread,
/// not cryptography, and a seed makes a run's requests repeatable.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator seeded with `seed`.
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (0 when `n` is 0).
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next_u64() % n
        }
    }
}

/// An empty latency histogram, in nanoseconds, 3 significant digits.
pub fn new_histogram() -> Result<Histogram<u64>> {
    Histogram::new_with_bounds(1, LATENCY_NS_MAX, 3).map_err(|e| anyhow!("a latency histogram: {e}"))
}

/// Records `elapsed` into `histogram`, clamped to its range.
pub fn record(histogram: &mut Histogram<u64>, elapsed: Duration) {
    let ns = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX).clamp(1, LATENCY_NS_MAX);
    histogram.saturating_record(ns);
}

/// Latency percentiles, in microseconds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Summary {
    /// Median.
    pub p50_us: f64,
    /// 99th percentile.
    pub p99_us: f64,
    /// 99.9th percentile.
    pub p999_us: f64,
    /// The slowest.
    pub max_us: f64,
    /// The mean.
    pub mean_us: f64,
}

impl Summary {
    /// The percentiles of `histogram` (nanoseconds); all zero when it is empty.
    pub fn of(histogram: &Histogram<u64>) -> Summary {
        let us = |ns: u64| ns as f64 / 1_000.0;
        Summary {
            p50_us: us(histogram.value_at_quantile(0.50)),
            p99_us: us(histogram.value_at_quantile(0.99)),
            p999_us: us(histogram.value_at_quantile(0.999)),
            max_us: us(histogram.max()),
            mean_us: histogram.mean() / 1_000.0,
        }
    }
}

/// When a closed loop measures, and how many requests each connection may send.
#[derive(Debug, Clone, Copy)]
pub struct LoopPlan {
    /// Connections, each its own loop.
    pub connections: usize,
    /// Requests that start before this much time has passed are not counted.
    pub warmup: Duration,
    /// The measured window after the warm-up.
    pub measure: Duration,
    /// The most requests per connection.
    pub calls_per_connection_max: u64,
}

/// What a closed loop measured in its window.
#[derive(Debug, Clone)]
pub struct LoopStats {
    /// Successful (2xx) requests that started and ended within the window.
    pub calls: u64,
    /// Non-2xx responses (at any time, warm-up included).
    pub errors: u64,
    /// The first non-2xx response: status and the start of its body.
    pub first_error: Option<String>,
    /// The window's length.
    pub seconds: f64,
    /// Latency of the counted requests, in nanoseconds.
    pub latency: Histogram<u64>,
}

impl LoopStats {
    /// Adds what `other` measured to this: another turn (its window adds to ours) or
    /// another connection of the same window (with `seconds` 0).
    pub fn merge(&mut self, other: LoopStats) -> Result<()> {
        self.calls += other.calls;
        self.seconds += other.seconds;
        self.errors += other.errors;
        self.first_error = self.first_error.take().or(other.first_error);
        self.latency.add(&other.latency).map_err(|e| anyhow!("merging histograms: {e}"))?;
        Ok(())
    }

    /// Counted requests per second.
    pub fn calls_per_second(&self) -> f64 {
        if self.seconds > 0.0 {
            self.calls as f64 / self.seconds
        } else {
            0.0
        }
    }
}

/// Builds connection `connection`'s request number `seq`.
pub type MakeCall = dyn Fn(usize, u64, &mut Rng) -> Call + Send + Sync;

/// Runs `plan.connections` closed loops against `addr`, each sending `make_call`'s
/// requests back to back, and merges what they measured. A transport error (a closed
/// connection, a timeout) fails the run; a non-2xx response is counted as an error.
pub async fn closed_loop(addr: SocketAddr, plan: LoopPlan, make_call: Arc<MakeCall>) -> Result<LoopStats> {
    let started = Instant::now();
    let measure_from = started + plan.warmup;
    let deadline = measure_from + plan.measure;
    let mut loops = JoinSet::new();
    for connection in 0..plan.connections {
        let make_call = make_call.clone();
        loops.spawn(connection_loop(
            addr,
            connection,
            measure_from,
            deadline,
            plan.calls_per_connection_max,
            make_call,
        ));
    }
    let mut total = LoopStats {
        calls: 0,
        errors: 0,
        first_error: None,
        seconds: plan.measure.as_secs_f64(),
        latency: new_histogram()?,
    };
    let mut failure = None;
    while let Some(joined) = loops.join_next().await {
        match joined {
            // Same window: the connection's `seconds` is 0, the window's stays.
            Ok(Ok(stats)) => total.merge(stats)?,
            Ok(Err(error)) => {
                failure.get_or_insert(error);
                // One broken connection means a broken run: stop the others now.
                loops.abort_all();
            }
            Err(join_error) if join_error.is_cancelled() => {}
            Err(join_error) => {
                failure.get_or_insert(anyhow!("a connection's loop panicked: {join_error}"));
            }
        }
    }
    match failure {
        Some(error) => Err(error),
        None => Ok(total),
    }
}

async fn connection_loop(
    addr: SocketAddr,
    connection: usize,
    measure_from: Instant,
    deadline: Instant,
    calls_max: u64,
    make_call: Arc<MakeCall>,
) -> Result<LoopStats> {
    let mut client = Connection::open(addr).await?;
    let mut rng = Rng::new(0x5EED ^ (connection as u64).wrapping_mul(0x1000_0000_01B3));
    let mut stats =
        LoopStats { calls: 0, errors: 0, first_error: None, seconds: 0.0, latency: new_histogram()? };
    for seq in 0..calls_max {
        let started = Instant::now();
        if started >= deadline {
            break;
        }
        let call = make_call(connection, seq, &mut rng);
        let (status, body) = client.send(&call).await?;
        let finished = Instant::now();
        if !status.is_success() {
            stats.errors += 1;
            if stats.first_error.is_none() {
                let text = String::from_utf8_lossy(&body[..body.len().min(300)]).into_owned();
                stats.first_error = Some(format!("{} {}: {status} {text}", call.method, call.path));
            }
            continue;
        }
        if started >= measure_from && finished <= deadline {
            stats.calls += 1;
            record(&mut stats.latency, finished - started);
        }
    }
    Ok(stats)
}

/// Reads `response`'s body line by line, calling `on_line` with each complete line
/// (without its `\n`) until the body ends or `on_line` returns false.
pub async fn for_each_line<F>(response: Response<Incoming>, mut on_line: F) -> Result<()>
where
    F: FnMut(&[u8]) -> bool,
{
    /// A line longer than this is not a line of ours.
    const LINE_BYTES_MAX: usize = 4 * 1024 * 1024;
    let mut body = response.into_body();
    let mut pending: Vec<u8> = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.context("reading the stream failed")?;
        let Ok(data) = frame.into_data() else { continue };
        pending.extend_from_slice(&data);
        let mut start = 0;
        while let Some(end) = pending[start..].iter().position(|&b| b == b'\n') {
            let line = &pending[start..start + end];
            start += end + 1;
            if !on_line(line) {
                return Ok(());
            }
        }
        pending.drain(..start);
        if pending.len() > LINE_BYTES_MAX {
            bail!("the stream sent a line of over {LINE_BYTES_MAX} bytes");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_of_a_histogram() {
        let mut histogram = new_histogram().unwrap();
        for us in 1..=1_000u64 {
            record(&mut histogram, Duration::from_micros(us));
        }
        let summary = Summary::of(&histogram);
        // Three significant digits: each percentile within 0.1% of the exact value.
        let near = |got: f64, want: f64| (got - want).abs() <= want * 0.001 + 1e-9;
        assert!(near(summary.p50_us, 500.0), "{summary:?}");
        assert!(near(summary.p99_us, 990.0), "{summary:?}");
        assert!(near(summary.p999_us, 999.0), "{summary:?}");
        assert!(near(summary.max_us, 1_000.0), "{summary:?}");
        assert!(near(summary.mean_us, 500.5), "{summary:?}");

        let empty = Summary::of(&new_histogram().unwrap());
        assert_eq!((empty.p50_us, empty.p999_us, empty.max_us), (0.0, 0.0, 0.0));

        // Out-of-range values are clamped, not lost.
        let mut histogram = new_histogram().unwrap();
        record(&mut histogram, Duration::ZERO);
        record(&mut histogram, Duration::from_secs(7_200));
        assert_eq!(histogram.len(), 2);
    }

    #[test]
    fn turns_merge() {
        let stats = |calls, seconds, first_error: Option<&str>, us: u64| {
            let mut latency = new_histogram().unwrap();
            record(&mut latency, Duration::from_micros(us));
            LoopStats { calls, errors: 1, first_error: first_error.map(str::to_string), seconds, latency }
        };
        let mut total = stats(10, 2.0, None, 100);
        total.merge(stats(30, 2.0, Some("404"), 300)).unwrap();
        total.merge(stats(0, 0.0, Some("500"), 200)).unwrap();
        assert_eq!((total.calls, total.errors, total.seconds), (40, 3, 4.0));
        assert_eq!(total.calls_per_second(), 10.0);
        assert_eq!(total.first_error.as_deref(), Some("404"));
        assert_eq!(total.latency.len(), 3);
    }

    #[test]
    fn rng_is_seeded_and_spread() {
        let (mut a, mut b) = (Rng::new(7), Rng::new(7));
        let first: Vec<u64> = (0..5).map(|_| a.next_u64()).collect();
        assert_eq!(first, (0..5).map(|_| b.next_u64()).collect::<Vec<_>>());
        assert_ne!(first, (0..5).map(|_| Rng::new(8).next_u64()).collect::<Vec<_>>());
        let mut seen = [false; 10];
        for _ in 0..1_000 {
            seen[a.below(10) as usize] = true;
        }
        assert!(seen.iter().all(|&s| s), "{seen:?}");
        assert_eq!(a.below(0), 0);
    }
}
