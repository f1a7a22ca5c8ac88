//! The demo page (`GET /sse-example.html`) in a real browser: headless Chromium loads the page
//! served by `flashcard-service standalone`, the page's `?autorun=1` submits the form and follows
//! the job over SSE, and `--dump-dom` hands back the DOM after the page settled. The assertions
//! read the rendered cards, the event log and the status badge out of that DOM.
//!
//! Chromium must be installed (`.ci/install-browser.sh`; `CHROMIUM=/path` overrides the binary):
//! the test fails, never skips, without it.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::support::{ChildGuard, free_port, http, wait_http_ok};
use serde_json::Value;

/// A paragraph with distinctive terms, so cards made from it cannot come from anywhere else.
const CONTENT: &str = "Zymurgy is the branch of applied chemistry that studies fermentation in brewing. \
Saccharomyces cerevisiae is the yeast species that converts maltose into ethanol and carbon dioxide. \
Wort is the sugary liquid extracted from mashed malted barley before the yeast is added. \
Brewers measure the original gravity of the wort with a hydrometer to predict the alcohol content.";

struct Service {
    _child: ChildGuard,
    base: String,
}

async fn start_service() -> Service {
    let port = free_port();
    let child = Command::new(env!("CARGO_BIN_EXE_flashcard-service"))
        .args(["standalone", "--listen", &format!("127.0.0.1:{port}")])
        .args(["--log-format", "text", "--rate-limit-jobs", "0"])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start flashcard-service");
    let child = ChildGuard(child);
    let base = format!("http://127.0.0.1:{port}");
    wait_http_ok(&format!("{base}/healthz"), Duration::from_secs(20)).await;
    Service {
        _child: child,
        base,
    }
}

fn chromium() -> PathBuf {
    if let Some(path) = std::env::var_os("CHROMIUM") {
        return PathBuf::from(path);
    }
    let default = PathBuf::from("/usr/bin/chromium");
    if default.exists() {
        return default;
    }
    let on_path = std::env::var_os("PATH").map(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join("chromium"))
            .find(|p| p.exists())
    });
    match on_path.flatten() {
        Some(path) => path,
        None => panic!(
            "chromium not found (looked at $CHROMIUM, /usr/bin/chromium and PATH): \
             install it with .ci/install-browser.sh (apt-get install chromium)"
        ),
    }
}

/// Loads `url` in headless Chromium and returns the DOM once the page is idle (virtual time lets
/// the page's fetch and EventSource finish before the dump).
async fn dump_dom(url: &str) -> String {
    let profile = std::env::temp_dir().join(format!(
        "fc-chromium-{}-{}",
        std::process::id(),
        free_port()
    ));
    let child = tokio::process::Command::new(chromium())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
            "--virtual-time-budget=15000",
            "--dump-dom",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(url)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start chromium");
    let output = tokio::time::timeout(Duration::from_secs(90), child.wait_with_output())
        .await
        .expect("chromium did not finish within 90 s")
        .expect("wait for chromium");
    let _ = std::fs::remove_dir_all(&profile);
    let dom = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success() && dom.contains("</html>"),
        "chromium failed ({}); stderr:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    dom
}

fn decode_entities(text: &str) -> String {
    text.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&nbsp;", "\u{a0}")
        .replace("&amp;", "&")
}

/// Text of every element whose opening tag contains `marker` (elements without child elements).
fn texts_of(dom: &str, marker: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut rest = dom;
    while let Some(at) = rest.find(marker) {
        rest = &rest[at + marker.len()..];
        let Some(open_end) = rest.find('>') else {
            break;
        };
        let body = &rest[open_end + 1..];
        let end = body.find('<').unwrap_or(body.len());
        found.push(decode_entities(&body[..end]));
    }
    found
}

/// The attribute `name` of the element with id `id`.
fn attribute_of(dom: &str, id: &str, name: &str) -> Option<String> {
    let start = dom.find(&format!(" id=\"{id}\""))? + 1;
    let tag_start = dom[..start].rfind('<')?;
    let tag_end = start + dom[start..].find('>')?;
    let tag = &dom[tag_start..tag_end];
    let key = format!("{name}=\"");
    let value_start = tag.find(&key)? + key.len();
    let value_len = tag[value_start..].find('"')?;
    Some(decode_entities(&tag[value_start..value_start + value_len]))
}

fn text_of_id(dom: &str, id: &str) -> String {
    texts_of(dom, &format!(" id=\"{id}\""))
        .into_iter()
        .next()
        .unwrap_or_default()
}

fn page_url(base: &str, params: &[(&str, &str)]) -> String {
    let query: Vec<String> = params
        .iter()
        .map(|(k, v)| format!("{k}={}", percent_encode(v)))
        .collect();
    format!("{base}/sse-example.html?{}", query.join("&"))
}

fn percent_encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_page_generates_and_shows_flashcards_over_sse() {
    let service = start_service().await;
    let url = page_url(
        &service.base,
        &[
            ("autorun", "1"),
            ("content", CONTENT),
            ("subject", "Chemistry"),
            ("topic", "Brewing"),
            ("userId", "browser-test"),
            ("cardCount", "4"),
        ],
    );
    let dom = dump_dom(&url).await;

    // The event log shows the job's life over SSE, in order, each job event with its id.
    let order: Vec<usize> = ["submitted", "connected", "active", "completed"]
        .iter()
        .map(|event| {
            dom.find(&format!("data-event=\"{event}\""))
                .unwrap_or_else(|| panic!("no `{event}` entry in the event log; DOM:\n{dom}"))
        })
        .collect();
    assert!(
        order.windows(2).all(|w| w[0] < w[1]),
        "log entries out of order: {order:?}"
    );
    assert!(
        dom.contains("data-event=\"completed\" data-id=\""),
        "the completed entry carries no SSE id"
    );
    assert!(
        !dom.contains("data-event=\"failed\""),
        "the job failed:\n{dom}"
    );
    assert_eq!(
        attribute_of(&dom, "status", "data-state").as_deref(),
        Some("completed")
    );
    assert!(text_of_id(&dom, "status").starts_with("completed"));
    // The page closed its EventSource after the terminal event.
    assert_eq!(
        attribute_of(&dom, "sse-state", "data-state").as_deref(),
        Some("closed")
    );
    assert_eq!(
        attribute_of(&dom, "error", "hidden").as_deref(),
        Some(""),
        "error box shown"
    );

    // The cards come from the submitted paragraph.
    let questions = texts_of(&dom, "class=\"card-text card-question\"");
    let answers = texts_of(&dom, "class=\"card-text card-answer\"");
    assert!(
        questions.len() >= 2,
        "expected rendered cards, got {questions:?}"
    );
    assert_eq!(questions.len(), answers.len());
    assert_eq!(dom.matches("data-testid=\"card\"").count(), questions.len());
    let zymurgy = questions
        .iter()
        .position(|q| q.contains("Zymurgy"))
        .unwrap_or_else(|| panic!("no card about Zymurgy: {questions:?}"));
    assert!(
        answers[zymurgy].contains("branch of applied chemistry"),
        "answer not taken from the paragraph: {:?}",
        answers[zymurgy]
    );

    // The page shows what the API recorded for the job, card for card.
    let job_id = text_of_id(&dom, "info-job");
    assert!(
        job_id.starts_with("generate-flashcards-"),
        "job id on the page: {job_id:?}"
    );
    let client = http();
    let status: Value = client
        .get(format!("{}/api/job-status/{job_id}", service.base))
        .send()
        .await
        .expect("job status")
        .json()
        .await
        .expect("job status JSON");
    assert_eq!(status["status"], "completed");
    let recorded: Vec<(String, String)> = status["result"]["flashcards"]
        .as_array()
        .expect("flashcards")
        .iter()
        .map(|c| {
            (
                c["question"].as_str().unwrap_or_default().to_owned(),
                c["answer"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    let shown: Vec<(String, String)> = questions.into_iter().zip(answers).collect();
    assert_eq!(shown, recorded);

    // The browser is gone; the server holds no SSE connection any more.
    let stats: Value = client
        .get(format!("{}/api/sse/stats", service.base))
        .send()
        .await
        .expect("sse stats")
        .json()
        .await
        .expect("sse stats JSON");
    assert_eq!(stats["connections"], 0, "{stats}");
    assert!(stats["eventsSent"].as_u64().unwrap_or(0) >= 3, "{stats}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_page_shows_validation_errors() {
    let service = start_service().await;
    let url = page_url(
        &service.base,
        &[("autorun", "1"), ("content", "   "), ("topic", "")],
    );
    let dom = dump_dom(&url).await;
    assert_eq!(
        attribute_of(&dom, "status", "data-state").as_deref(),
        Some("error")
    );
    assert_eq!(
        attribute_of(&dom, "error", "data-code").as_deref(),
        Some("VALIDATION_ERROR")
    );
    assert_eq!(
        attribute_of(&dom, "error", "hidden"),
        None,
        "error box hidden"
    );
    let messages = texts_of(&dom, "<li");
    assert!(
        messages.iter().any(|m| m.starts_with("content:"))
            && messages.iter().any(|m| m.starts_with("topic:")),
        "field errors not listed: {messages:?}"
    );
    assert!(
        dom.contains("<strong>400 <code>VALIDATION_ERROR</code>: Validation failed"),
        "HTTP status, code and message not shown together"
    );
    assert!(
        !dom.contains("data-event=\"connected\""),
        "connected to SSE without a job"
    );
    assert_eq!(dom.matches("data-testid=\"card\"").count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_page_is_self_contained() {
    let service = start_service().await;
    let response = http()
        .get(format!("{}/sse-example.html", service.base))
        .send()
        .await
        .expect("demo page");
    assert_eq!(response.status(), 200);
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert!(content_type.starts_with("text/html"), "{content_type}");
    let page = response.text().await.expect("page body");
    // No CDN or other external resource: the page must work on an offline machine.
    for needle in [
        "src=\"http",
        "href=\"http",
        "@import",
        "url(http",
        "src=\"//",
        "href=\"//",
    ] {
        assert!(
            !page.contains(needle),
            "external resource ({needle}) in the demo page"
        );
    }
    for id in [
        "submit",
        "connect",
        "log",
        "status",
        "cards",
        "content",
        "autoConnect",
    ] {
        assert!(page.contains(&format!("id=\"{id}\"")), "no element #{id}");
    }
}
