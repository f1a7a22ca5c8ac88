//! The operations console (`GET /console`) in a real browser: headless Chromium, driven over
//! the DevTools protocol, watches `flashcard-service standalone` (memory store, offline provider
//! slowed with `--simulated-latency-ms`) while a task submits jobs.
//!
//! Asserted: the page goes live over SSE and its numbers follow the queue (completed jobs rise,
//! durations and the worker appear); the throughput chart fills (a screenshot's chart area holds
//! the series' colour, counted pixel by pixel); the kill-switch toggle asks for the admin token,
//! shows the 403 of a wrong token (and changes nothing), and with the right token switches the
//! kill-switch on, after which a POST gets 429; the page fits a phone's width.
//!
//! Needs Chromium (`.ci/install-browser.sh`); it fails, never skips, without it.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::support::cdp::Browser;
use crate::support::{Service, http};
use serde_json::{Value, json};

const TOKEN: &str = "console-test-admin-token";
const WAIT: Duration = Duration::from_secs(60);

/// Submits a job every 100 ms until `stop`; counts 202s and 429s.
struct Submitter {
    stop: Arc<AtomicBool>,
    accepted: Arc<AtomicU64>,
    refused: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Submitter {
    fn start(url: String) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let accepted = Arc::new(AtomicU64::new(0));
        let refused = Arc::new(AtomicU64::new(0));
        let (s, a, r) = (stop.clone(), accepted.clone(), refused.clone());
        let task = tokio::spawn(async move {
            let client = http();
            // Bounded: at most 1,500 submissions (150 s).
            for i in 0..1500u32 {
                if s.load(Ordering::SeqCst) {
                    return;
                }
                let user = format!("console-{i}");
                let response = client
                    .post(&url)
                    .header("user-id", &user)
                    .json(&json!({
                        "content": "Photosynthesis is the process by which green plants turn \
                            light into chemical energy. Chlorophyll is the green pigment that \
                            absorbs light.",
                        "subject": "biology", "topic": "plants", "userId": user,
                    }))
                    .send()
                    .await;
                match response.map(|r| r.status().as_u16()) {
                    Ok(202) => a.fetch_add(1, Ordering::SeqCst),
                    Ok(429) => r.fetch_add(1, Ordering::SeqCst),
                    other => panic!("unexpected answer to a submission: {other:?}"),
                };
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
        Self {
            stop,
            accepted,
            refused,
            task,
        }
    }
}

/// Pixels inside `rect` (CSS px = screenshot px at scale 1) in a colour: the chart's series
/// strokes and the tint of their fills, not the white background, the grey grid or black text
/// (whose red, green and blue are within a few steps of each other).
fn coloured_pixels(png_bytes: &[u8], rect: &Value) -> (u64, u64) {
    let decoder = png::Decoder::new(std::io::Cursor::new(png_bytes));
    let mut reader = decoder.read_info().expect("PNG header");
    let mut buf = vec![0; reader.output_buffer_size().expect("PNG size")];
    let info = reader.next_frame(&mut buf).expect("PNG frame");
    let channels = match info.color_type {
        png::ColorType::Rgb => 3,
        png::ColorType::Rgba => 4,
        other => panic!("unexpected PNG colour type {other:?}"),
    };
    let n = |k: &str| rect[k].as_f64().unwrap_or(0.0).max(0.0) as u32;
    let (x0, y0) = (n("x"), n("y"));
    let x1 = (x0 + n("width")).min(info.width);
    let y1 = (y0 + n("height")).min(info.height);
    let (mut coloured, mut total) = (0, 0);
    for y in y0..y1 {
        for x in x0..x1 {
            let at = (y as usize * info.line_size) + x as usize * channels;
            let (r, g, b) = (buf[at] as i32, buf[at + 1] as i32, buf[at + 2] as i32);
            total += 1;
            let spread = r.max(g).max(b) - r.min(g).min(b);
            if spread > 10 {
                coloured += 1;
            }
        }
    }
    (coloured, total)
}

async fn kill_switch_enabled(service: &Service) -> bool {
    let status: Value = http()
        .get(service.url("/api/admin/budget/status"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    status["killSwitch"]["enabled"].as_bool().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_follows_jobs_draws_charts_and_switches_the_kill_switch() {
    let started = Instant::now();
    let service = Service::start(
        "standalone",
        &[
            "--simulated-latency-ms",
            "150",
            "--worker-concurrency",
            "2",
            "--rate-limit-jobs",
            "0",
        ],
        &[("ADMIN_TOKEN", TOKEN)],
    )
    .await;

    // The demo page links to the console, and the console loads nothing from elsewhere.
    let demo = http()
        .get(service.url("/sse-example.html"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(demo.contains("href=\"/console\""), "no link to the console");
    let page = http()
        .get(service.url("/console"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for needle in ["src=\"http", "href=\"http", "src=\"//", "@import"] {
        assert!(!page.contains(needle), "external resource ({needle})");
    }
    let license = http()
        .get(service.url("/console/vendor/LICENSE"))
        .send()
        .await
        .unwrap();
    assert_eq!(license.status(), 200);
    assert!(license.text().await.unwrap().contains("MIT License"));

    let submitter = Submitter::start(service.url("/api/ai/generate-flashcards"));
    let mut browser = Browser::start().await;
    browser.viewport(1280, 1500, false).await;
    browser
        .navigate(&service.url("/console?intervalMs=500"))
        .await;
    browser
        .wait_for(
            "document.getElementById('conn')?.dataset.state === 'live'",
            WAIT,
            "the console did not go live",
        )
        .await;

    // Numbers follow the queue.
    let completed = |v: Value| v.as_str().and_then(|s| s.parse::<u64>().ok()).unwrap_or(0);
    let first = completed(
        browser
            .wait_for(
                "Number(document.getElementById('q-completed').textContent) > 0 \
                 && document.getElementById('q-completed').textContent",
                WAIT,
                "no completed job shown",
            )
            .await,
    );
    let later = browser
        .wait_for(
            &format!(
                "Number(document.getElementById('q-completed').textContent) >= {} \
                 && document.getElementById('q-completed').textContent",
                first + 5
            ),
            WAIT,
            "completed count did not rise",
        )
        .await;
    assert!(completed(later) >= first + 5);
    let p50 = browser
        .wait_for(
            "document.getElementById('p50').textContent !== '-' \
             && document.getElementById('p50').textContent",
            WAIT,
            "no p50 duration",
        )
        .await;
    let p50_text = p50.as_str().unwrap_or_default().to_owned();
    assert!(
        p50_text.ends_with("ms") || p50_text.ends_with(" s"),
        "{p50_text}"
    );
    let workers = browser
        .eval("document.querySelectorAll('#workers tr[data-worker]').length")
        .await;
    assert_eq!(workers, 1, "one worker in the table");
    let alerts = browser
        .eval(
            "[...document.querySelectorAll('#alerts li')].map(li => \
             [li.dataset.alert, li.dataset.active, li.querySelector('a')?.getAttribute('href')])",
        )
        .await;
    let alerts = alerts.as_array().expect("alerts").clone();
    assert_eq!(alerts.len(), 7, "{alerts:?}");
    for a in &alerts {
        let url = a[2].as_str().unwrap_or_default();
        let name = a[0].as_str().unwrap_or_default().to_lowercase();
        assert!(url.ends_with(&format!("RUNBOOK.md#{name}")), "{a}");
    }

    // The throughput chart has live points, and the screenshot shows them.
    browser
        .wait_for(
            "throughput[0].length >= 6 && throughput[1].slice(-6).filter(v => v > 0).length >= 4",
            WAIT,
            "the throughput chart has no live points",
        )
        .await;
    let rect = browser
        .eval(
            "(() => { const r = document.querySelector('#throughput-chart .u-over')\
             .getBoundingClientRect(); return {x: r.x, y: r.y, width: r.width, height: r.height}; })()",
        )
        .await;
    let screenshot = browser.screenshot().await;
    let (coloured, total) = coloured_pixels(&screenshot, &rect);
    let shot = std::env::temp_dir().join(format!("fc-console-{}.png", std::process::id()));
    std::fs::write(&shot, &screenshot).unwrap();
    assert!(
        total > 10_000 && coloured * 10 > total,
        "the throughput chart looks empty: {coloured} of {total} pixels coloured (screenshot \
         at {})",
        shot.display()
    );
    // The same count on the failure-rate chart, whose only line lies at 0 % (no job failed):
    // the measure tells a filled chart from a flat one.
    let flat_rect = browser
        .eval(
            "(() => { const r = document.querySelector('#failure-chart .u-over')\
             .getBoundingClientRect(); return {x: r.x, y: r.y, width: r.width, height: r.height}; })()",
        )
        .await;
    let (flat, flat_total) = coloured_pixels(&screenshot, &flat_rect);
    assert!(
        flat * 10 < flat_total,
        "the flat failure-rate chart counts as filled: {flat} of {flat_total}"
    );
    let failure_points = browser.eval("failure[0].length").await;
    assert!(
        failure_points.as_u64().unwrap_or(0) >= 6,
        "{failure_points}"
    );

    // The toggle with a wrong token: the page shows the 403, nothing changes.
    let open_and_submit = |token: &str| {
        format!(
            "(() => {{ document.getElementById('ks-toggle').click(); \
             const d = document.getElementById('token-dialog'); if (!d.open) return false; \
             document.getElementById('token-input').value = {token:?}; \
             document.getElementById('token-submit').click(); return true; }})()"
        )
    };
    assert_eq!(
        browser.eval(&open_and_submit("not-the-token")).await,
        true,
        "the toggle did not ask for the token"
    );
    let refused = browser
        .wait_for(
            "document.getElementById('ks-result').dataset.status === 'error' \
             && document.getElementById('ks-result').textContent",
            WAIT,
            "no error shown for a wrong token",
        )
        .await;
    assert!(
        refused
            .as_str()
            .unwrap_or_default()
            .starts_with("403 FORBIDDEN"),
        "{refused}"
    );
    assert!(!kill_switch_enabled(&service).await);
    let before = submitter.accepted.load(Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        submitter.accepted.load(Ordering::SeqCst) > before,
        "jobs stopped without the token"
    );

    // With the token the kill-switch goes on; the page shows it and new jobs get 429.
    assert_eq!(browser.eval(&open_and_submit(TOKEN)).await, true);
    browser
        .wait_for(
            "document.getElementById('ks-result').dataset.status === 'ok'",
            WAIT,
            "the kill-switch request failed",
        )
        .await;
    assert!(kill_switch_enabled(&service).await);
    browser
        .wait_for(
            "document.getElementById('ks-state').dataset.enabled === 'true' && \
             document.querySelector('#alerts li[data-alert=FlashcardKillSwitchActive]')\
             .dataset.active === 'true'",
            WAIT,
            "the page does not show the kill-switch on",
        )
        .await;
    let detail = browser
        .eval("document.getElementById('ks-detail').textContent")
        .await;
    assert!(
        detail.as_str().unwrap_or_default().contains("by admin"),
        "{detail}"
    );
    let refused_before = submitter.refused.load(Ordering::SeqCst);
    let deadline = Instant::now() + WAIT;
    while submitter.refused.load(Ordering::SeqCst) < refused_before + 3 {
        assert!(Instant::now() < deadline, "submissions were not refused");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let response = http()
        .post(service.url("/api/ai/generate-flashcards"))
        .json(&json!({"content": "x", "subject": "s", "topic": "t", "userId": "after"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 429);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["code"], "BUDGET_LIMIT_EXCEEDED");
    submitter.stop.store(true, Ordering::SeqCst);
    let _ = submitter.task.await;

    // On a phone the page is one column and never wider than the screen.
    browser.viewport(390, 844, true).await;
    let fits = browser
        .wait_for(
            "document.documentElement.scrollWidth <= window.innerWidth + 1 && \
             document.getElementById('throughput-chart').getBoundingClientRect().width <= 390 && \
             [document.documentElement.scrollWidth, window.innerWidth]",
            Duration::from_secs(10),
            "the page is wider than a phone",
        )
        .await;
    let phone = std::env::temp_dir().join(format!("fc-console-phone-{}.png", std::process::id()));
    std::fs::write(&phone, browser.screenshot().await).unwrap();
    eprintln!(
        "console: first completed {first}, p50 {p50_text}, throughput chart {coloured}/{total} \
         pixels coloured, failure-rate chart {flat}/{flat_total}, phone width {fits}, {} jobs accepted, {} refused; took {:?}; screenshot {}",
        submitter.accepted.load(Ordering::SeqCst),
        submitter.refused.load(Ordering::SeqCst),
        started.elapsed(),
        shot.display()
    );
}
