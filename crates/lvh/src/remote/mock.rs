//! A tiny in-process HTTP server for tests of code that talks to a model server: it listens on
//! `127.0.0.1:0`, answers each request (one per connection, `Connection: close`) from a handler
//! and records what it was sent. Not a general HTTP server: it reads `Content-Length` bodies
//! only.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

/// A request as the mock saw it.
#[derive(Debug, Clone, PartialEq)]
pub struct Recorded {
    /// `GET`, `POST`, ...
    pub method: String,
    /// The request path, e.g. `/v1/completions`.
    pub path: String,
    /// The body parsed as JSON (`Null` when empty or not JSON).
    pub body: serde_json::Value,
}

/// What the mock answers.
#[derive(Debug, Clone, PartialEq)]
pub struct MockResponse {
    /// HTTP status.
    pub status: u16,
    /// Body, sent as `application/json`.
    pub body: String,
    /// Wait this long before answering (to provoke client timeouts).
    pub delay: Duration,
}

impl MockResponse {
    /// `200 OK` with a JSON body.
    pub fn json(body: &serde_json::Value) -> Self {
        Self {
            status: 200,
            body: body.to_string(),
            delay: Duration::ZERO,
        }
    }

    /// An error status with a plain body.
    pub fn status(status: u16, body: &str) -> Self {
        Self {
            status,
            body: body.to_owned(),
            delay: Duration::ZERO,
        }
    }

    /// The same response after `delay`.
    pub fn delayed(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }
}

type Handler = Box<dyn FnMut(&Recorded) -> MockResponse + Send>;

/// The running mock; it stops accepting when dropped.
#[derive(Debug)]
pub struct MockServer {
    url: String,
    requests: Arc<Mutex<Vec<Recorded>>>,
    stop: Arc<AtomicBool>,
    addr: std::net::SocketAddr,
}

impl MockServer {
    /// Answers requests in turn from `script`; once it runs out, with `500 mock script exhausted`.
    ///
    /// # Errors
    /// When the port cannot be bound.
    pub fn scripted(script: Vec<MockResponse>) -> io::Result<Self> {
        let mut script = script.into_iter();
        Self::start(move |_| {
            script
                .next()
                .unwrap_or_else(|| MockResponse::status(500, "mock script exhausted"))
        })
    }

    /// Answers every request with `handler(request)`.
    ///
    /// # Errors
    /// When the port cannot be bound.
    pub fn start(
        handler: impl FnMut(&Recorded) -> MockResponse + Send + 'static,
    ) -> io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        let requests = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (reqs, stopped) = (Arc::clone(&requests), Arc::clone(&stop));
        let mut handler: Handler = Box::new(handler);
        thread::spawn(move || {
            for stream in listener.incoming() {
                if stopped.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(stream) = stream else { continue };
                // A broken connection (e.g. a client that timed out) only ends that exchange.
                let _ = serve_one(stream, &mut handler, &reqs);
            }
        });
        Ok(Self {
            url: format!("http://{addr}"),
            requests,
            stop,
            addr,
        })
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The requests received so far, in order.
    pub fn requests(&self) -> Vec<Recorded> {
        self.requests.lock().map(|r| r.clone()).unwrap_or_default()
    }
}

impl Drop for MockServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so that it sees the flag; it may be busy, so do not wait.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_millis(100));
    }
}

fn serve_one(
    stream: TcpStream,
    handler: &mut Handler,
    requests: &Mutex<Vec<Recorded>>,
) -> io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or_default().to_owned();
    let path = parts.next().unwrap_or_default().to_owned();
    if method.is_empty() {
        return Ok(()); // the wake-up connection from Drop, or a probe
    }
    let mut length = 0usize;
    loop {
        line.clear();
        if reader.read_line(&mut line)? == 0 {
            break;
        }
        let header = line.trim_end();
        if header.is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':') {
            if name.trim().eq_ignore_ascii_case("content-length") {
                length = value.trim().parse().unwrap_or(0);
            }
        }
    }
    let mut body = vec![0u8; length];
    reader.read_exact(&mut body)?;
    let recorded = Recorded {
        method,
        path,
        body: serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null),
    };
    if let Ok(mut r) = requests.lock() {
        r.push(recorded.clone());
    }
    let response = handler(&recorded);
    if !response.delay.is_zero() {
        thread::sleep(response.delay);
    }
    let mut stream = stream;
    write!(
        stream,
        "HTTP/1.1 {} MOCK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{}",
        response.status,
        response.body.len(),
        response.body
    )?;
    stream.flush()
}
