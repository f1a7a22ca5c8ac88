//! The HTTP layer's limits against the real binary (`standalone`), over raw TCP so each test
//! controls exactly which bytes are sent and when: slowloris, an oversized `Content-Length`,
//! the body deadline, `Content-Length` + chunked, the TCP connection limit, idle keep-alives
//! (also after a finished SSE stream), a client that stopped reading, and 2,000 non-reading
//! clients against the connection limit and the process's memory.
//!
//! Timeouts are configured small (about a second) so the whole file stays well under a minute;
//! every wait polls with a generous deadline for a loaded 2-core machine.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::support::{STUDY_TEXT, Service};
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::Semaphore;

fn addr(service: &Service) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], service.port))
}

/// One HTTP/1.1 response read off a raw socket.
#[derive(Debug)]
struct RawResponse {
    status: u16,
    head: String,
    body: Vec<u8>,
}

impl RawResponse {
    fn header(&self, name: &str) -> Option<String> {
        let prefix = format!("{}:", name.to_ascii_lowercase());
        self.head
            .lines()
            .find(|l| l.to_ascii_lowercase().starts_with(&prefix))
            .map(|l| l[prefix.len()..].trim().to_owned())
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {:?}", self))
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Reads one response with a `Content-Length` body (every non-streaming answer of the API).
async fn read_response<R: AsyncRead + Unpin>(stream: &mut R, within: Duration) -> RawResponse {
    let deadline = tokio::time::Instant::now() + within;
    let mut raw = Vec::new();
    loop {
        if let Some(end) = find(&raw, b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&raw[..end]).to_string();
            let status = head
                .split_whitespace()
                .nth(1)
                .and_then(|s| s.parse().ok())
                .unwrap_or_else(|| panic!("no status line: {head:?}"));
            let mut response = RawResponse {
                status,
                head,
                body: raw[end + 4..].to_vec(),
            };
            let length: usize = response
                .header("content-length")
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("no Content-Length: {:?}", response.head));
            while response.body.len() < length {
                let mut buf = [0u8; 4096];
                let n = tokio::time::timeout_at(deadline, stream.read(&mut buf))
                    .await
                    .expect("body timed out")
                    .expect("read body");
                assert!(n > 0, "closed inside the body: {response:?}");
                response.body.extend_from_slice(&buf[..n]);
            }
            return response;
        }
        let mut buf = [0u8; 4096];
        let n = tokio::time::timeout_at(deadline, stream.read(&mut buf))
            .await
            .unwrap_or_else(|_| panic!("no response within {within:?}"))
            .expect("read head");
        assert!(
            n > 0,
            "closed before a response: {:?}",
            String::from_utf8_lossy(&raw)
        );
        raw.extend_from_slice(&buf[..n]);
    }
}

/// Waits until the server closes `stream` (EOF or reset); returns what it still sent.
async fn wait_closed(stream: &mut TcpStream, within: Duration) -> Result<Vec<u8>, Vec<u8>> {
    let deadline = tokio::time::Instant::now() + within;
    let mut seen = Vec::new();
    loop {
        let mut buf = [0u8; 4096];
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Err(_) => return Err(seen),
            Ok(Ok(0)) | Ok(Err(_)) => return Ok(seen),
            Ok(Ok(n)) => seen.extend_from_slice(&buf[..n]),
        }
    }
}

fn get(path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: test\r\n\r\n").into_bytes()
}

/// `GET path` on a fresh connection; the connection is returned for keep-alive checks.
async fn get_on_new_connection(at: SocketAddr, path: &str) -> (RawResponse, TcpStream) {
    let mut stream = TcpStream::connect(at).await.expect("connect");
    stream.write_all(&get(path)).await.expect("write");
    let response = read_response(&mut stream, Duration::from_secs(10)).await;
    (response, stream)
}

/// The status a fresh `GET /healthz` gets, retrying connections the server resets without an
/// answer until `within` has passed.
async fn refused_status(at: SocketAddr, within: Duration) -> u16 {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let mut stream = TcpStream::connect(at).await.expect("connect");
        stream.write_all(&get("/healthz")).await.expect("write");
        let mut raw = Vec::new();
        let mut buf = [0u8; 4096];
        let answered = loop {
            match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
                Ok(Ok(n)) if n > 0 => {
                    raw.extend_from_slice(&buf[..n]);
                    if raw.windows(4).any(|w| w == b"\r\n\r\n") {
                        break true;
                    }
                }
                Ok(Ok(_)) | Ok(Err(_)) => break false,
                Err(_) => panic!("no answer within {within:?}"),
            }
        };
        if answered {
            let head = String::from_utf8_lossy(&raw);
            return head
                .split(' ')
                .nth(1)
                .and_then(|s| s.parse().ok())
                .unwrap_or_else(|| panic!("no status line: {head:?}"));
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "every connection was closed without an answer for {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .expect("VmRSS of the service")
}

/// Open sockets of a process (its connections plus the listener and Redis, if any).
fn socket_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("fd dir of the service")
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter(|target| target.to_string_lossy().starts_with("socket:"))
        .count()
}

#[tokio::test]
async fn slowloris_sockets_are_closed_within_the_header_timeout() {
    const TIMEOUT_MS: u64 = 1_000;
    const SOCKETS: usize = 300;
    let service = Service::start(
        "standalone",
        &["--header-read-timeout-ms", &TIMEOUT_MS.to_string()],
        &[],
    )
    .await;
    let at = addr(&service);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..SOCKETS {
        tasks.push(tokio::spawn(async move {
            let mut stream = TcpStream::connect(at).await.expect("connect");
            let opened = Instant::now();
            // Half send nothing at all; half trickle a request head that never ends.
            let trickle =
                b"GET /healthz HTTP/1.1\r\nHost: test\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaa";
            let mut sent = 0;
            loop {
                if i % 2 == 1
                    && sent < trickle.len()
                    && stream.write_all(&trickle[sent..=sent]).await.is_ok()
                {
                    sent += 1;
                }
                let mut buf = [0u8; 256];
                match tokio::time::timeout(Duration::from_millis(150), stream.read(&mut buf)).await
                {
                    Ok(Ok(0)) | Ok(Err(_)) => return Ok(opened.elapsed()),
                    Ok(Ok(_)) => {
                        return Err("the server answered a request it never got".to_owned());
                    }
                    Err(_) if opened.elapsed() > Duration::from_secs(15) => {
                        return Err(format!("still open after {:?}", opened.elapsed()));
                    }
                    Err(_) => {}
                }
            }
        }));
    }
    // The server keeps serving while the slow sockets are held.
    let (healthy, _) = get_on_new_connection(at, "/healthz").await;
    assert_eq!(healthy.status, 200);
    let mut lifetimes = Vec::new();
    for task in tasks {
        lifetimes.push(task.await.expect("slow client").expect("slow client"));
    }
    let longest = lifetimes.iter().max().copied().unwrap_or_default();
    let shortest = lifetimes.iter().min().copied().unwrap_or_default();
    assert!(
        shortest >= Duration::from_millis(TIMEOUT_MS - 200),
        "closed before the header timeout: {shortest:?}"
    );
    assert!(
        longest < Duration::from_millis(TIMEOUT_MS + 4_000),
        "a slowloris socket outlived the {TIMEOUT_MS} ms header timeout: {longest:?}"
    );
    eprintln!(
        "{SOCKETS} slowloris sockets closed after {shortest:?}..{longest:?} (all within {:?})",
        started.elapsed()
    );
}

#[tokio::test]
async fn oversized_content_length_gets_413_at_once_without_sending_the_body() {
    let service = Service::start("standalone", &["--max-body-bytes", "1024"], &[]).await;
    for length in ["99999999999", "1025"] {
        let mut stream = TcpStream::connect(addr(&service)).await.expect("connect");
        let head = format!(
            "POST /api/ai/generate-flashcards HTTP/1.1\r\nHost: test\r\n\
             Content-Type: application/json\r\nContent-Length: {length}\r\n\r\n"
        );
        let started = Instant::now();
        stream.write_all(head.as_bytes()).await.expect("write");
        let response = read_response(&mut stream, Duration::from_secs(10)).await;
        let took = started.elapsed();
        assert_eq!(response.status, 413, "{response:?}");
        assert_eq!(response.json()["code"], "PAYLOAD_TOO_LARGE");
        assert!(response.json()["error"].is_string());
        assert!(
            took < Duration::from_millis(500),
            "413 took {took:?} for Content-Length {length}"
        );
        // The unread body cannot be skipped, so the connection is not reused.
        assert!(
            wait_closed(&mut stream, Duration::from_secs(5))
                .await
                .is_ok(),
            "connection left open after the 413"
        );
    }
    // At the limit the request goes through to validation.
    let response = service
        .post_job(serde_json::json!({"content": "x".repeat(900), "subject": "s", "topic": "t", "userId": "u"}))
        .await
        .expect("POST");
    assert_eq!(response.status(), 202);
}

#[tokio::test]
async fn a_trickled_body_gets_408_after_the_body_deadline() {
    let service = Service::start("standalone", &["--request-body-timeout-ms", "1000"], &[]).await;
    let stream = TcpStream::connect(addr(&service)).await.expect("connect");
    let (mut reader, mut writer) = stream.into_split();
    let started = Instant::now();
    writer
        .write_all(
            b"POST /api/ai/generate-flashcards HTTP/1.1\r\nHost: test\r\n\
              Content-Type: application/json\r\nContent-Length: 200\r\n\r\n{\"content\":",
        )
        .await
        .expect("write");
    // Keep the body coming, one byte every 200 ms: a per-read timeout alone would never fire.
    let trickle = tokio::spawn(async move {
        for _ in 0..100 {
            tokio::time::sleep(Duration::from_millis(200)).await;
            if writer.write_all(b" ").await.is_err() {
                return;
            }
        }
    });
    let response = read_response(&mut reader, Duration::from_secs(10)).await;
    let took = started.elapsed();
    trickle.abort();
    assert_eq!(response.status, 408, "{response:?}");
    assert_eq!(response.json()["code"], "REQUEST_TIMEOUT");
    assert!(
        took >= Duration::from_millis(800) && took < Duration::from_secs(6),
        "408 after {took:?}"
    );
}

#[tokio::test]
async fn content_length_with_chunked_encoding_cannot_smuggle_a_request() {
    let service = Service::start("standalone", &[], &[]).await;
    let mut stream = TcpStream::connect(addr(&service)).await.expect("connect");
    // A front proxy that trusted Content-Length would see one request here; a server that
    // trusted it would see the `GET /smuggled` as a second one. Hyper reads the chunked body
    // (empty), drops Content-Length, answers once and closes.
    let smuggle = b"POST /api/ai/generate-flashcards HTTP/1.1\r\nHost: test\r\n\
        Content-Type: application/json\r\nContent-Length: 40\r\nTransfer-Encoding: chunked\r\n\r\n\
        0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: test\r\n\r\n";
    stream.write_all(smuggle).await.expect("write");
    let response = read_response(&mut stream, Duration::from_secs(10)).await;
    assert_eq!(response.status, 400, "{response:?}");
    assert!(
        response.json()["code"].is_string(),
        "JSON error: {response:?}"
    );
    assert_eq!(response.header("connection").as_deref(), Some("close"));
    let rest = wait_closed(&mut stream, Duration::from_secs(5))
        .await
        .expect("connection closed after the answer");
    assert!(
        rest.is_empty(),
        "a second (smuggled) request was answered: {:?}",
        String::from_utf8_lossy(&rest)
    );
}

#[tokio::test]
async fn the_tcp_connection_limit_answers_503_and_recovers_when_connections_close() {
    const LIMIT: usize = 20;
    let service = Service::start(
        "standalone",
        &[
            "--max-connections",
            &LIMIT.to_string(),
            // Held keep-alives must not be closed by the timers during the test.
            "--header-read-timeout-ms",
            "30000",
        ],
        &[],
    )
    .await;
    let at = addr(&service);
    // Each held connection has been served once, so the server has surely accepted it.
    // (The start-up's health checks may hold a slot for a moment after they finish.)
    let mut held = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while held.len() < LIMIT {
        let (response, stream) = get_on_new_connection(at, "/healthz").await;
        match response.status {
            200 => held.push(stream),
            503 if Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(50)).await,
            other => panic!("connection {} got {other}", held.len()),
        }
    }
    let (refused, mut refused_stream) = get_on_new_connection(at, "/healthz").await;
    assert_eq!(refused.status, 503, "{refused:?}");
    assert_eq!(refused.json()["code"], "TOO_MANY_CONNECTIONS");
    assert_eq!(refused.header("retry-after").as_deref(), Some("2"));
    assert!(
        wait_closed(&mut refused_stream, Duration::from_secs(5))
            .await
            .is_ok()
    );
    // Not only new connections count: the held ones still work.
    held[0].write_all(&get("/healthz")).await.expect("write");
    assert_eq!(
        read_response(&mut held[0], Duration::from_secs(10))
            .await
            .status,
        200
    );

    // Close five; exactly five new connections fit again (the server notices the closes).
    held.truncate(LIMIT - 5);
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut admitted = Vec::new();
    while admitted.len() < 5 {
        assert!(
            Instant::now() < deadline,
            "closed slots were not reused: {}",
            admitted.len()
        );
        let (response, stream) = get_on_new_connection(at, "/healthz").await;
        match response.status {
            200 => admitted.push(stream),
            503 => tokio::time::sleep(Duration::from_millis(50)).await,
            other => panic!("unexpected status {other}"),
        }
    }
    let (full_again, _) = get_on_new_connection(at, "/healthz").await;
    assert_eq!(
        full_again.status, 503,
        "more than {LIMIT} connections admitted"
    );
}

#[tokio::test]
async fn idle_keep_alives_close_also_after_a_finished_sse_stream() {
    const TIMEOUT_MS: u64 = 1_500;
    let service = Service::start(
        "standalone",
        &["--header-read-timeout-ms", &TIMEOUT_MS.to_string()],
        &[],
    )
    .await;
    let at = addr(&service);

    // A plain keep-alive: served, then closed once it sat idle for the timeout.
    let (response, mut stream) = get_on_new_connection(at, "/healthz").await;
    assert_eq!(response.status, 200);
    assert_ne!(response.header("connection").as_deref(), Some("close"));
    let idle_since = Instant::now();
    wait_closed(&mut stream, Duration::from_millis(TIMEOUT_MS + 5_000))
        .await
        .expect("idle keep-alive still open");
    let idle = idle_since.elapsed();
    assert!(
        idle >= Duration::from_millis(TIMEOUT_MS - 300),
        "closed too early: {idle:?}"
    );

    // An SSE stream that ended (the job completed) leaves a keep-alive that closes the same way.
    let job = service.submit(STUDY_TEXT, "idle").await;
    service.wait_finished(&job, Duration::from_secs(20)).await;
    let mut stream = TcpStream::connect(at).await.expect("connect");
    stream
        .write_all(&get(&format!("/api/job-events?jobId={job}")))
        .await
        .expect("write");
    let mut raw = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while find(&raw, b"\r\n0\r\n\r\n").is_none() {
        assert!(
            Instant::now() < deadline,
            "SSE stream did not end: {:?}",
            String::from_utf8_lossy(&raw)
        );
        let mut buf = [0u8; 8192];
        let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf))
            .await
            .expect("SSE read timed out")
            .expect("SSE read");
        assert!(n > 0, "closed before the end of the stream");
        raw.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&raw);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(text.contains("event: completed"), "{text}");
    let ended = Instant::now();
    let rest = wait_closed(&mut stream, Duration::from_millis(TIMEOUT_MS + 5_000))
        .await
        .expect("the finished SSE connection lingered as a keep-alive");
    assert!(rest.is_empty());
    assert!(
        ended.elapsed() >= Duration::from_millis(TIMEOUT_MS - 300),
        "closed before the keep-alive timeout"
    );
}

#[tokio::test]
async fn a_client_that_stops_reading_is_dropped_after_the_idle_timeout() {
    let service = Service::start(
        "standalone",
        &[
            "--max-connections",
            "1",
            "--idle-timeout-seconds",
            "2",
            "--sse-heartbeat-seconds",
            "1",
        ],
        &[],
    )
    .await;
    let at = addr(&service);
    // Pipeline many large answers into a small receive buffer and never read: the server's
    // writes stall, no byte moves, and the idle timer must free the connection.
    // It is admitted first (served once), so it holds the only slot: the health checks of the
    // start-up may still hold it for a moment, hence the retry.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut stuck = loop {
        let socket = TcpSocket::new_v4().expect("socket");
        socket.set_recv_buffer_size(4096).expect("SO_RCVBUF");
        let mut stream = socket.connect(at).await.expect("connect");
        stream.write_all(&get("/healthz")).await.expect("write");
        if read_response(&mut stream, Duration::from_secs(10))
            .await
            .status
            == 200
        {
            break stream;
        }
        assert!(Instant::now() < deadline, "never admitted");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let requests: Vec<u8> = (0..300).flat_map(|_| get("/sse-example.html")).collect();
    let stalled = Instant::now();
    // The server stops reading once its writes stall, so this may not finish: do not wait.
    let writer = tokio::spawn(async move {
        let _ = stuck.write_all(&requests).await;
        stuck
    });
    // With the only slot taken, probes get 503 until the idle timeout frees it.
    let deadline = Instant::now() + Duration::from_secs(20);
    let freed_after = loop {
        assert!(
            Instant::now() < deadline,
            "the stuck connection was never closed"
        );
        let (response, _) = get_on_new_connection(at, "/healthz").await;
        if response.status == 200 {
            break stalled.elapsed();
        }
        assert_eq!(response.status, 503);
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        freed_after >= Duration::from_millis(1_500),
        "freed before the idle timeout: {freed_after:?}"
    );
    writer.abort();
}

#[tokio::test]
async fn an_open_sse_stream_outlives_the_idle_timeout_on_its_heartbeats() {
    let service = Service::start(
        "standalone",
        &[
            "--idle-timeout-seconds",
            "2",
            "--sse-heartbeat-seconds",
            "1",
            // The job stays active, so its stream stays open and quiet but for heartbeats.
            "--simulated-latency-ms",
            "600000",
        ],
        &[],
    )
    .await;
    let job = service.submit(STUDY_TEXT, "quiet").await;
    let mut stream = TcpStream::connect(addr(&service)).await.expect("connect");
    stream
        .write_all(&get(&format!("/api/job-events?jobId={job}")))
        .await
        .expect("write");
    let started = Instant::now();
    let mut raw = Vec::new();
    while started.elapsed() < Duration::from_secs(5) {
        let mut buf = [0u8; 8192];
        match tokio::time::timeout(Duration::from_millis(500), stream.read(&mut buf)).await {
            Err(_) => {}
            Ok(Ok(0)) | Ok(Err(_)) => panic!(
                "stream closed after {:?}: {}",
                started.elapsed(),
                String::from_utf8_lossy(&raw)
            ),
            Ok(Ok(n)) => raw.extend_from_slice(&buf[..n]),
        }
    }
    let text = String::from_utf8_lossy(&raw);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    let beats = text.matches("event: heartbeat").count();
    assert!(beats >= 2, "{beats} heartbeats in 5 s: {text}");
}

#[tokio::test]
async fn two_thousand_non_reading_clients_stay_within_the_connection_limit() {
    const LIMIT: usize = 200;
    const CLIENTS: usize = 2_000;
    /// RSS one held SSE connection may cost (measured ~33 KiB in release builds; debug builds
    /// and allocator slack get twice that).
    const PER_CONNECTION_KIB: u64 = 64;
    /// Growth independent of the connection count (runtime, allocator arenas, rejections).
    const FIXED_KIB: u64 = 16 * 1024;
    let service = Service::start(
        "standalone",
        &[
            "--max-connections",
            &LIMIT.to_string(),
            "--sse-max-connections",
            "5000",
            // The one job stays active for the whole test, so its streams stay open.
            "--simulated-latency-ms",
            "600000",
        ],
        &[],
    )
    .await;
    let at = addr(&service);
    let pid = service.child.0.id();
    let job = service.submit(STUDY_TEXT, "flood").await;
    // Warm up: a few streams opened and closed, so lazily built state is counted before.
    for _ in 0..5 {
        let (response, _) = get_on_new_connection(at, "/healthz").await;
        assert_eq!(response.status, 200);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let rss_before = rss_kib(pid);
    let sockets_before = socket_count(pid);

    let request = Arc::new(get(&format!("/api/job-events?jobId={job}")));
    let opening = Arc::new(Semaphore::new(200));
    let mut tasks = Vec::new();
    for _ in 0..CLIENTS {
        let request = request.clone();
        let opening = opening.clone();
        tasks.push(tokio::spawn(async move {
            let _permit = opening.acquire_owned().await.ok()?;
            let mut stream = TcpStream::connect(at).await.ok()?;
            stream.write_all(&request).await.ok()?;
            // Never read: whatever the server sends stays in the kernel buffers.
            Some(stream)
        }));
    }
    let mut clients = Vec::new();
    for task in tasks {
        if let Some(stream) = task.await.expect("client task") {
            clients.push(stream);
        }
    }
    assert!(
        clients.len() > CLIENTS / 2,
        "only {} clients connected",
        clients.len()
    );
    // Rejections finish within a few seconds; then only admitted connections remain.
    let deadline = Instant::now() + Duration::from_secs(15);
    let held = loop {
        let held = socket_count(pid).saturating_sub(sockets_before);
        if held <= LIMIT || Instant::now() > deadline {
            break held;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(held <= LIMIT, "{held} connections held, limit {LIMIT}");
    let rss_after = rss_kib(pid);
    let growth = rss_after.saturating_sub(rss_before);
    let budget = LIMIT as u64 * PER_CONNECTION_KIB + FIXED_KIB;
    eprintln!(
        "{} non-reading clients: {held} connections held, RSS {rss_before} -> {rss_after} KiB \
         (+{growth} KiB, budget {budget} KiB)",
        clients.len()
    );
    assert!(
        growth <= budget,
        "RSS grew {growth} KiB, budget {budget} KiB"
    );
    // The limit is on connections, so a fresh client is refused with 503 while the flood is
    // held. A reset instead of an answer (seen once in ~10 full runs, cause not yet found: a
    // rejection slot still busy with the flood is the suspect) is retried for a few seconds;
    // anything but a 503 fails.
    let status = refused_status(at, Duration::from_secs(5)).await;
    assert_eq!(status, 503);
    drop(clients);
}
