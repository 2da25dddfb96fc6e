//! The end-to-end transport: the real `allsource` binary on a loopback port, and a tiny
//! blocking HTTP/1.1 client over `std::net::TcpStream` that can also send hostile raw
//! requests.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::{Client, Reply, Req};

/// How long the server may take to start, and a request to be answered.
pub const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);
pub const IO_TIMEOUT: Duration = Duration::from_secs(30);

/// A running `allsource` process; killed (if still running) when dropped.
pub struct Server {
    child: Mutex<Child>,
    pub addr: SocketAddr,
    /// The process's stderr (its log), line by line, from after the "listening" line.
    lines: Mutex<Receiver<String>>,
    /// Every log line read so far.
    pub startup_log: Vec<String>,
}

impl Server {
    /// The server in memory on a free loopback port.
    pub fn start() -> Server {
        Server::start_with(&["--in-memory"])
    }

    /// The server with these flags, on a free loopback port.
    pub fn start_with(args: &[&str]) -> Server {
        let mut all = vec!["--addr", "127.0.0.1:0"];
        all.extend_from_slice(args);
        Server::launch(&all, &[])
    }

    /// The server with exactly these flags and environment variables, which must make
    /// it listen on a loopback port.
    pub fn launch(args: &[&str], envs: &[(&str, &str)]) -> Server {
        Server::attach(spawn(args, envs))
    }

    /// Takes over a child that runs the server (directly, or through a wrapper that
    /// `exec`s it) with stderr piped: waits for its "listening on" line and for
    /// `GET /health`.
    pub fn attach(child: Child) -> Server {
        Server::try_attach(child).unwrap_or_else(|(status, log)| {
            panic!("the server exited ({status:?}) without reporting its address; its log:\n{log}")
        })
    }

    /// Like [`Server::attach`], for a server that may refuse to start: the server once
    /// it serves, or its exit status and its whole log (stderr) if it exits first.
    pub fn try_attach(child: Child) -> Result<Server, (ExitStatus, String)> {
        let server = Server::try_attach_unchecked(child)?;
        server.wait_until_healthy();
        Ok(server)
    }

    /// Like [`Server::try_attach`], but returns once the address is logged, without
    /// asking `GET /health` over plain HTTP (for a server that speaks TLS).
    pub fn try_attach_unchecked(mut child: Child) -> Result<Server, (ExitStatus, String)> {
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        // Drains the log for the whole life of the process, so it never blocks on a
        // full pipe.
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        let mut startup_log = Vec::new();
        let addr = loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(remaining) {
                Ok(line) => {
                    let found = line
                        .split("listening on ")
                        .nth(1)
                        // Ends at a space, or at the quote of a JSON log line's message.
                        .map(|rest| rest.split([' ', '"']).next().unwrap().parse::<SocketAddr>().unwrap());
                    startup_log.push(line);
                    if let Some(addr) = found {
                        break addr;
                    }
                }
                // The log ended: the process is exiting (bounded wait).
                Err(RecvTimeoutError::Disconnected) => loop {
                    if let Some(status) = child.try_wait().unwrap() {
                        return Err((status, startup_log.join("\n")));
                    }
                    if Instant::now() > deadline {
                        let _ = child.kill();
                        let _ = child.wait();
                        panic!("the server closed its log but did not exit; its log: {startup_log:#?}");
                    }
                    std::thread::sleep(Duration::from_millis(10));
                },
                Err(RecvTimeoutError::Timeout) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!("the server did not report its address within {STARTUP_TIMEOUT:?}; its log: {startup_log:#?}");
                }
            }
        };
        assert!(addr.ip().is_loopback(), "{addr}");
        Ok(Server { child: Mutex::new(child), addr, lines: Mutex::new(rx), startup_log })
    }

    /// Polls `GET /health` a bounded number of times.
    fn wait_until_healthy(&self) {
        for _ in 0..100 {
            if let Ok(reply) = try_send(self.addr, &Req::get("/health")) {
                if reply.status == 200 {
                    return;
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("GET /health never answered 200 on {}", self.addr);
    }

    pub fn pid(&self) -> u32 {
        self.child.lock().unwrap().id()
    }

    /// Kills the process with SIGKILL at once (without starting kill(1) first).
    pub fn kill(&self) {
        let _ = self.child.lock().unwrap().kill();
    }

    /// Sends a signal (`TERM`, `INT`, ...) with kill(1).
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill").args(["-s", name, &self.pid().to_string()]).status().unwrap();
        assert!(status.success(), "kill -s {name} failed");
    }

    /// Waits for the next log line containing every one of `needles`; returns it.
    /// Lines before it are consumed.
    pub fn wait_for_log(&self, needles: &[&str], timeout: Duration) -> String {
        let lines = self.lines.lock().unwrap();
        let deadline = Instant::now() + timeout;
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            match lines.recv_timeout(remaining) {
                Ok(line) if needles.iter().all(|n| line.contains(n)) => return line,
                Ok(_) => {}
                Err(RecvTimeoutError::Timeout) => panic!("no log line with {needles:?} within {timeout:?}"),
                Err(RecvTimeoutError::Disconnected) => panic!("the log ended without {needles:?}"),
            }
        }
    }

    /// Every log line not consumed yet, until the log ends (the process exits); panics
    /// if it has not ended within `timeout`.
    pub fn rest_of_log(&self, timeout: Duration) -> Vec<String> {
        let lines = self.lines.lock().unwrap();
        let deadline = Instant::now() + timeout;
        let mut rest = Vec::new();
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            match lines.recv_timeout(remaining) {
                Ok(line) => rest.push(line),
                Err(RecvTimeoutError::Disconnected) => return rest,
                Err(RecvTimeoutError::Timeout) => panic!("the log did not end within {timeout:?}: {rest:#?}"),
            }
        }
    }

    /// Waits (polling, bounded) for the process to exit.
    pub fn wait_exit(&self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.lock().unwrap().try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "the server did not exit within {timeout:?}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Opens a connection to the server.
    pub fn connect(&self) -> TcpStream {
        connect(self.addr).unwrap()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(mut child) = self.child.lock() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Client for Server {
    fn send(&self, req: Req) -> Reply {
        let what = format!("{} {}", req.method, req.target);
        try_send(self.addr, &req).unwrap_or_else(|e| panic!("{what}: {e}"))
    }
}

/// Starts the binary with these arguments and variables (its own variables unset
/// unless given; `RUST_LOG=info` unless given), stderr piped.
pub fn spawn(args: &[&str], envs: &[(&str, &str)]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_allsource"))
        .args(args)
        .env("RUST_LOG", "info")
        .env_remove("ALLSOURCE_ADDR")
        .env_remove("ALLSOURCE_DATA_DIR")
        .env_remove("ALLSOURCE_IN_MEMORY")
        .env_remove("ALLSOURCE_API_KEYS")
        .env_remove("ALLSOURCE_API_KEYS_FILE")
        .env_remove("ALLSOURCE_TLS_CERT")
        .env_remove("ALLSOURCE_TLS_KEY")
        .envs(envs.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn connect(addr: SocketAddr) -> std::io::Result<TcpStream> {
    let stream = TcpStream::connect_timeout(&addr, IO_TIMEOUT)?;
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    Ok(stream)
}

/// The request's bytes on the wire, with `Connection: close` and a `Content-Length`
/// (unless the request sets them itself).
pub fn request_bytes(addr: SocketAddr, req: &Req) -> Vec<u8> {
    let mut head = format!("{} {} HTTP/1.1\r\nHost: {addr}\r\n", req.method, req.target);
    if !req.headers.iter().any(|(n, _)| n.eq_ignore_ascii_case("connection")) {
        head.push_str("Connection: close\r\n");
    }
    for (name, value) in &req.headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    if !req.headers.iter().any(|(n, _)| n.eq_ignore_ascii_case("content-length")) {
        head.push_str(&format!("Content-Length: {}\r\n", req.body.len()));
    }
    head.push_str("\r\n");
    let mut bytes = head.into_bytes();
    bytes.extend_from_slice(&req.body);
    bytes
}

fn try_send(addr: SocketAddr, req: &Req) -> std::io::Result<Reply> {
    send_raw(addr, &request_bytes(addr, req))
}

/// Sends `req` on a new connection and returns the reply only if it arrived whole (its
/// body as long as its `Content-Length` says); a refused or reset connection or a reply
/// cut short is an error, not a panic: for clients of a server that may be killed.
pub fn try_send_whole(addr: SocketAddr, req: &Req) -> std::io::Result<Reply> {
    let reply = try_send(addr, req)?;
    match reply.header("content-length").map(|v| v.parse::<usize>()) {
        Some(Ok(length)) if length == reply.body.len() => Ok(reply),
        None if reply.header("transfer-encoding").is_some() => Ok(reply),
        other => Err(std::io::Error::other(format!(
            "reply cut short: content-length {other:?}, {} body bytes",
            reply.body.len()
        ))),
    }
}

/// Sends raw bytes on a new connection and reads the reply until the server closes.
pub fn send_raw(addr: SocketAddr, bytes: &[u8]) -> std::io::Result<Reply> {
    let mut stream = connect(addr)?;
    stream.write_all(bytes)?;
    read_reply(&mut stream)
}

/// Reads one response from a `Connection: close` exchange (over TCP, or TLS).
pub fn read_reply(stream: &mut impl Read) -> std::io::Result<Reply> {
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    parse_reply(&raw)
        .ok_or_else(|| std::io::Error::other(format!("bad response: {:?}", String::from_utf8_lossy(&raw))))
}

/// Reads exactly one response (framed by its `Content-Length`) from a kept-alive
/// connection.
pub fn read_one_reply(stream: &mut TcpStream) -> std::io::Result<Reply> {
    let mut raw = Vec::new();
    let mut byte = [0u8; 1];
    while !raw.ends_with(b"\r\n\r\n") {
        stream.read_exact(&mut byte)?;
        raw.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&raw).to_ascii_lowercase();
    let length: usize = head
        .lines()
        .find_map(|line| line.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("no content-length in {head:?}")))?;
    let mut body = vec![0u8; length];
    stream.read_exact(&mut body)?;
    raw.extend_from_slice(&body);
    parse_reply(&raw).ok_or_else(|| std::io::Error::other("bad response"))
}

fn parse_reply(raw: &[u8]) -> Option<Reply> {
    let end = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&raw[..end]).ok()?;
    let mut lines = head.split("\r\n");
    let status = lines.next()?.split(' ').nth(1)?.parse().ok()?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let rest = &raw[end + 4..];
    let chunked = headers.iter().any(|(n, v)| n == "transfer-encoding" && v.contains("chunked"));
    let body = if chunked { dechunk(rest)? } else { rest.to_vec() };
    Some(Reply { status, headers, body })
}

fn dechunk(mut rest: &[u8]) -> Option<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let line_end = rest.windows(2).position(|w| w == b"\r\n")?;
        let size_text = std::str::from_utf8(&rest[..line_end]).ok()?;
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        rest = &rest[line_end + 2..];
        if size == 0 {
            return Some(body);
        }
        body.extend_from_slice(rest.get(..size)?);
        rest = rest.get(size + 2..)?;
    }
}
