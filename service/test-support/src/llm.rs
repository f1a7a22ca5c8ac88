//! A fake OpenAI-compatible chat-completions server inside the test: the worth of a budget is
//! only proven against a provider that reports usage as badly as allowed.
//!
//! It reports one prompt token per byte of the text it was sent (message contents and the
//! response schema) and the full `max_tokens` as completion tokens, so every call costs exactly
//! the reservation bound. It can be switched down (every call answers 503) and slowed down, and
//! made to answer as a real provider fails while still billing: empty content after reasoning,
//! a reply cut off at the token limit, a refusal, text that is not JSON, a reply that never
//! comes in time, or one cut midway. It keeps the bill: the usage of every call the model ran.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Value, json};

/// How the model answers (every kind but `Cards` holds no usable card, and all are billed).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ReplyKind {
    /// Valid cards.
    #[default]
    Cards,
    /// Empty content with `finish_reason: length`: a reasoning model that spent its whole
    /// bound thinking (`reasoning_tokens` = completion tokens).
    EmptyAfterReasoning,
    /// JSON cut off inside the first card, `finish_reason: length`.
    Truncated,
    /// `refusal` set, no content.
    Refusal,
    /// Chatter instead of JSON, `finish_reason: stop`.
    NotJson,
    /// The model runs (and is billed), but the reply takes longer than any client waits.
    Hang,
    /// `200`, half a body, then the connection is cut.
    CutMidway,
}

#[derive(Default)]
struct LlmState {
    kind: Mutex<ReplyKind>,
    /// Usage (input, output tokens) of every call the model ran: the provider's bill.
    bill: Mutex<Vec<(u64, u64)>>,
    down: AtomicBool,
    delay_ms: AtomicU64,
    /// Completion tokens reported, as a multiple of `max_tokens` in percent (100 = exactly).
    usage_percent: AtomicU64,
    calls: AtomicU64,
    answered: AtomicU64,
    refused: AtomicU64,
    in_flight: AtomicU64,
}

/// The running server.
pub struct FakeLlm {
    pub base_url: String,
    state: Arc<LlmState>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeLlm {
    fn drop(&mut self) {
        self.task.abort();
    }
}

struct InFlight<'a>(&'a AtomicU64);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

async fn chat(State(state): State<Arc<LlmState>>, body: String) -> Response {
    state.calls.fetch_add(1, Ordering::SeqCst);
    state.in_flight.fetch_add(1, Ordering::SeqCst);
    let _guard = InFlight(&state.in_flight);
    let delay = state.delay_ms.load(Ordering::SeqCst);
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    if state.down.load(Ordering::SeqCst) {
        state.refused.fetch_add(1, Ordering::SeqCst);
        let error =
            json!({"error": {"message": "the model is overloaded", "type": "server_error"}});
        return (StatusCode::SERVICE_UNAVAILABLE, error.to_string()).into_response();
    }
    let request: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    let mut prompt_bytes = 0u64;
    if let Some(messages) = request["messages"].as_array() {
        for m in messages {
            prompt_bytes += m["content"].as_str().map_or(0, |c| c.len() as u64);
        }
    }
    if let Some(format) = request.get("response_format") {
        prompt_bytes += format.to_string().len() as u64;
    }
    let max_tokens = request["max_tokens"]
        .as_u64()
        .or_else(|| request["max_completion_tokens"].as_u64())
        .unwrap_or(256);
    let cards = (max_tokens.saturating_sub(32) / 120).clamp(1, 50);
    let flashcards: Vec<Value> = (0..cards)
        .map(|i| json!({"question": format!("Question {i}?"), "answer": format!("Answer {i}.")}))
        .collect();
    let kind = *state.kind.lock().expect("kind");
    // A cut-off reply used the whole bound; the others as much as `usage_percent` says.
    let completion = match kind {
        ReplyKind::EmptyAfterReasoning | ReplyKind::Truncated => max_tokens,
        _ => max_tokens * state.usage_percent.load(Ordering::SeqCst) / 100,
    };
    state
        .bill
        .lock()
        .expect("bill")
        .push((prompt_bytes, completion));
    state.answered.fetch_add(1, Ordering::SeqCst);
    let cards_json = json!({"flashcards": flashcards}).to_string();
    let (message, finish_reason) = match kind {
        ReplyKind::Cards | ReplyKind::Hang | ReplyKind::CutMidway => {
            (json!({"role": "assistant", "content": cards_json}), "stop")
        }
        ReplyKind::EmptyAfterReasoning => (json!({"role": "assistant", "content": ""}), "length"),
        ReplyKind::Truncated => (
            json!({"role": "assistant", "content": &cards_json[..cards_json.len().min(40)]}),
            "length",
        ),
        ReplyKind::Refusal => (
            json!({"role": "assistant", "content": null, "refusal": "I can't help with that."}),
            "stop",
        ),
        ReplyKind::NotJson => (
            json!({"role": "assistant", "content": "Sure! Here are some flashcards about plants."}),
            "stop",
        ),
    };
    let reasoning = if kind == ReplyKind::EmptyAfterReasoning {
        completion
    } else {
        0
    };
    let reply = json!({
        "id": "chatcmpl-fake",
        "object": "chat.completion",
        "choices": [{"index": 0, "message": message, "finish_reason": finish_reason}],
        "usage": {
            "prompt_tokens": prompt_bytes,
            "completion_tokens": completion,
            "total_tokens": prompt_bytes + completion,
            "completion_tokens_details": {"reasoning_tokens": reasoning},
        },
    })
    .to_string();
    if kind == ReplyKind::Hang {
        tokio::time::sleep(Duration::from_secs(600)).await;
    }
    if kind == ReplyKind::CutMidway {
        // Half the body, then an error: the server aborts the connection mid-reply.
        let half = reply[..reply.len() / 2].to_owned();
        let chunks: Vec<Result<String, std::io::Error>> =
            vec![Ok(half), Err(std::io::Error::other("connection cut"))];
        let mut response =
            axum::body::Body::from_stream(futures::stream::iter(chunks)).into_response();
        response.headers_mut().insert(
            "content-type",
            axum::http::HeaderValue::from_static("application/json"),
        );
        return response;
    }
    let mut response = (StatusCode::OK, reply).into_response();
    response.headers_mut().insert(
        "content-type",
        axum::http::HeaderValue::from_static("application/json"),
    );
    response
}

impl FakeLlm {
    pub async fn start() -> Self {
        let state = Arc::new(LlmState {
            usage_percent: AtomicU64::new(100),
            ..LlmState::default()
        });
        let app = Router::new()
            .route("/v1/chat/completions", post(chat))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind fake LLM");
        let addr: SocketAddr = listener.local_addr().expect("fake LLM address");
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self {
            base_url: format!("http://{addr}/v1"),
            state,
            task,
        }
    }

    /// Every call answers 503 while down.
    pub fn set_down(&self, down: bool) {
        self.state.down.store(down, Ordering::SeqCst);
    }

    pub fn set_delay(&self, delay: Duration) {
        self.state
            .delay_ms
            .store(delay.as_millis() as u64, Ordering::SeqCst);
    }

    /// How the model answers from now on.
    pub fn set_reply(&self, kind: ReplyKind) {
        *self.state.kind.lock().expect("kind") = kind;
    }

    /// What the provider billed so far at these prices, in micro-dollars (exact, unrounded).
    pub fn bill_micros(&self, input_per_1k: f64, output_per_1k: f64) -> f64 {
        self.state
            .bill
            .lock()
            .expect("bill")
            .iter()
            .map(|&(i, o)| i as f64 * input_per_1k * 1_000.0 + o as f64 * output_per_1k * 1_000.0)
            .sum()
    }

    /// Calls the model ran (and billed).
    pub fn billed_calls(&self) -> usize {
        self.state.bill.lock().expect("bill").len()
    }

    /// Reported completion tokens in percent of `max_tokens` (over 100 beats the bound).
    pub fn set_usage_percent(&self, percent: u64) {
        self.state.usage_percent.store(percent, Ordering::SeqCst);
    }

    pub fn calls(&self) -> u64 {
        self.state.calls.load(Ordering::SeqCst)
    }

    pub fn answered(&self) -> u64 {
        self.state.answered.load(Ordering::SeqCst)
    }

    pub fn refused(&self) -> u64 {
        self.state.refused.load(Ordering::SeqCst)
    }

    pub fn in_flight(&self) -> u64 {
        self.state.in_flight.load(Ordering::SeqCst)
    }

    /// Flags for a service process to use this server.
    pub fn provider_args(&self) -> Vec<String> {
        vec![
            "--provider".into(),
            "openai".into(),
            "--openai-base-url".into(),
            self.base_url.clone(),
            "--model".into(),
            "fake-model".into(),
        ]
    }
}
