//! The OpenAI-compatible provider against a small chat-completions server running in the test:
//! request shape, usage (reasoning included), error mapping (429, 5xx, 4xx, timeout, refused
//! connection, a reply cut midway), what each failure may have cost (its billing), and the
//! tolerated reply formats.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use flashcard_core::job::JobRequest;
use flashcard_core::job::TokenUsage;
use flashcard_provider::openai::{OpenAiConfig, OpenAiProvider};
use flashcard_provider::{Billing, Provider, ProviderError};
use serde_json::{Value, json};

const KEY: &str = "sk-test-7f3a9c1e5b";

#[derive(Clone)]
struct Reply {
    status: StatusCode,
    headers: Vec<(&'static str, &'static str)>,
    body: String,
    delay: Duration,
}

fn reply(status: u16, body: impl Into<String>) -> Reply {
    Reply {
        status: StatusCode::from_u16(status).unwrap(),
        headers: vec![],
        body: body.into(),
        delay: Duration::ZERO,
    }
}

/// A chat completion whose message content is `content`.
fn completion(content: &str) -> Reply {
    reply(
        200,
        json!({
            "id": "chatcmpl-1",
            "object": "chat.completion",
            "choices": [{
                "index": 0,
                "message": {"role": "assistant", "content": content},
                "finish_reason": "stop",
            }],
            "usage": {"prompt_tokens": 321, "completion_tokens": 87, "total_tokens": 408},
        })
        .to_string(),
    )
}

#[derive(Default)]
struct Mock {
    replies: Mutex<VecDeque<Reply>>,
    seen: Mutex<Vec<(HeaderMap, Value)>>,
}

async fn chat(State(mock): State<Arc<Mock>>, headers: HeaderMap, body: String) -> Response {
    let parsed = serde_json::from_str(&body).unwrap_or(Value::Null);
    mock.seen.lock().unwrap().push((headers, parsed));
    let next = mock.replies.lock().unwrap().pop_front();
    let Some(r) = next else {
        return (StatusCode::INTERNAL_SERVER_ERROR, "no scripted reply").into_response();
    };
    tokio::time::sleep(r.delay).await;
    let mut response = (r.status, r.body).into_response();
    response.headers_mut().insert(
        "content-type",
        "application/json".parse().expect("static header"),
    );
    for (name, value) in r.headers {
        response
            .headers_mut()
            .insert(name, value.parse().expect("static header"));
    }
    response
}

async fn serve(replies: Vec<Reply>) -> (SocketAddr, Arc<Mock>) {
    let mock = Arc::new(Mock {
        replies: Mutex::new(replies.into()),
        ..Default::default()
    });
    let app = Router::new()
        .route("/v1/chat/completions", post(chat))
        .with_state(mock.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (addr, mock)
}

fn config(addr: SocketAddr, timeout: Duration) -> OpenAiConfig {
    OpenAiConfig {
        base_url: format!("http://{addr}/v1/"),
        model: "gpt-4o-mini".into(),
        api_key: Some(KEY.into()),
        timeout,
        reasoning_effort: None,
        reasoning_tokens: 0,
    }
}

fn provider(addr: SocketAddr, timeout: Duration) -> OpenAiProvider {
    OpenAiProvider::new(config(addr, timeout)).unwrap()
}

/// The usage every scripted completion reports.
const USAGE: TokenUsage = TokenUsage {
    input_tokens: 321,
    output_tokens: 87,
    reasoning_tokens: 0,
};

/// A chat completion with the given message, finish reason and usage.
fn answer(message: Value, finish_reason: &str, usage: Value) -> Reply {
    reply(
        200,
        json!({
            "choices": [{"index": 0, "message": message, "finish_reason": finish_reason}],
            "usage": usage,
        })
        .to_string(),
    )
}

fn request(cards: u32) -> JobRequest {
    JobRequest {
        content: "Mitochondria are organelles that produce ATP through cellular respiration."
            .into(),
        subject: "Biology".into(),
        topic: "Cells".into(),
        user_id: "user-1".into(),
        card_count: cards,
    }
}

const TWO_CARDS: &str = r#"{"flashcards":[
    {"question":"What do mitochondria produce?","answer":"ATP"},
    {"question":"What are mitochondria?","answer":"Organelles"}]}"#;

fn assert_no_key(err: &ProviderError) {
    assert!(!err.to_string().contains(KEY), "key leaked: {err}");
    assert!(!format!("{err:?}").contains(KEY), "key leaked: {err:?}");
}

#[tokio::test]
async fn success_sends_model_messages_schema_and_bearer_key() {
    let (addr, mock) = serve(vec![completion(TWO_CARDS)]).await;
    let generation = provider(addr, Duration::from_secs(5))
        .generate(&request(2))
        .await
        .unwrap();

    assert_eq!(generation.flashcards.len(), 2);
    assert_eq!(
        generation.flashcards[0].question,
        "What do mitochondria produce?"
    );
    assert_eq!(generation.flashcards[0].answer, "ATP");
    assert!(generation.flashcards.iter().all(|c| c.kind == "llm"));
    assert_eq!(generation.usage.input_tokens, 321);
    assert_eq!(generation.usage.output_tokens, 87);

    let seen = mock.seen.lock().unwrap();
    let (headers, body) = &seen[0];
    assert_eq!(headers["authorization"], format!("Bearer {KEY}").as_str());
    assert_eq!(body["model"], "gpt-4o-mini");
    assert_eq!(body["messages"][0]["role"], "system");
    assert_eq!(body["messages"][1]["role"], "user");
    let system = body["messages"][0]["content"].as_str().unwrap();
    assert!(system.contains("exactly 2 flashcards"), "{system}");
    let user = body["messages"][1]["content"].as_str().unwrap();
    assert!(user.contains("Mitochondria are organelles"), "{user}");
    assert!(user.contains("Topic: Cells"), "{user}");
    assert_eq!(body["response_format"]["type"], "json_schema");
    assert_eq!(body["response_format"]["json_schema"]["strict"], true);
    assert_eq!(
        body["response_format"]["json_schema"]["schema"]["required"],
        json!(["flashcards"])
    );
    // Not api.openai.com, so the widely supported name of the output cap.
    assert_eq!(body["max_tokens"], 2 * 120 + 32);
}

#[tokio::test]
async fn extra_cards_are_cut_to_the_requested_count() {
    let (addr, _) = serve(vec![completion(TWO_CARDS)]).await;
    let generation = provider(addr, Duration::from_secs(5))
        .generate(&request(1))
        .await
        .unwrap();
    assert_eq!(generation.flashcards.len(), 1);
}

#[tokio::test]
async fn fenced_json_is_accepted() {
    let fenced = format!("Sure! Here are your cards:\n```json\n{TWO_CARDS}\n```\n");
    let (addr, _) = serve(vec![completion(&fenced)]).await;
    let generation = provider(addr, Duration::from_secs(5))
        .generate(&request(2))
        .await
        .unwrap();
    assert_eq!(generation.flashcards[1].answer, "Organelles");
}

#[tokio::test]
async fn missing_usage_is_estimated() {
    let body = json!({"choices": [{"message": {"content": TWO_CARDS}}]}).to_string();
    let (addr, _) = serve(vec![reply(200, body)]).await;
    let generation = provider(addr, Duration::from_secs(5))
        .generate(&request(2))
        .await
        .unwrap();
    assert!(generation.usage.input_tokens > 50, "{:?}", generation.usage);
    assert!(
        generation.usage.output_tokens > 10,
        "{:?}",
        generation.usage
    );
}

#[tokio::test]
async fn rate_limit_carries_retry_after() {
    let mut r = reply(429, r#"{"error":{"message":"Rate limit reached"}}"#);
    r.headers.push(("retry-after", "12"));
    let (addr, _) = serve(vec![r]).await;
    let err = provider(addr, Duration::from_secs(5))
        .generate(&request(2))
        .await
        .unwrap_err();
    assert_eq!(
        err,
        ProviderError::RateLimited {
            retry_after: Some(Duration::from_secs(12)),
            usage: None,
        }
    );
    assert!(err.is_retryable());
    assert_eq!(
        err.billing(),
        Billing::Nothing,
        "a 429 never reached the model"
    );
}

#[tokio::test]
async fn server_error_is_retryable_and_keeps_the_message() {
    let (addr, _) = serve(vec![reply(
        500,
        r#"{"error":{"message":"The server had an error"}}"#,
    )])
    .await;
    let err = provider(addr, Duration::from_secs(5))
        .generate(&request(2))
        .await
        .unwrap_err();
    assert_eq!(
        err,
        ProviderError::Server {
            status: 500,
            message: "The server had an error".into(),
            usage: None,
        }
    );
    assert!(err.is_retryable());
    assert_eq!(err.billing(), Billing::Nothing);
}

#[tokio::test]
async fn an_error_status_that_reports_usage_is_billed() {
    let body = json!({
        "error": {"message": "upstream failed after generation"},
        "usage": {"prompt_tokens": 500, "completion_tokens": 40},
    });
    let (addr, _) = serve(vec![reply(502, body.to_string())]).await;
    let err = provider(addr, Duration::from_secs(5))
        .generate(&request(2))
        .await
        .unwrap_err();
    assert!(
        matches!(err, ProviderError::Server { status: 502, .. }),
        "{err:?}"
    );
    assert_eq!(
        err.billing(),
        Billing::Reported(TokenUsage {
            input_tokens: 500,
            output_tokens: 40,
            reasoning_tokens: 0,
        })
    );
}

#[tokio::test]
async fn client_error_is_rejected_without_the_key() {
    let body = format!(r#"{{"error":{{"message":"Incorrect API key provided: {KEY}"}}}}"#);
    let (addr, _) = serve(vec![reply(401, body)]).await;
    let err = provider(addr, Duration::from_secs(5))
        .generate(&request(2))
        .await
        .unwrap_err();
    match &err {
        ProviderError::Rejected {
            status, message, ..
        } => {
            assert_eq!(*status, 401);
            assert!(message.contains("Incorrect API key provided"), "{message}");
        }
        other => panic!("expected Rejected, got {other:?}"),
    }
    assert!(!err.is_retryable());
    assert_no_key(&err);
}

#[tokio::test]
async fn slow_server_times_out() {
    let mut r = completion(TWO_CARDS);
    r.delay = Duration::from_secs(3);
    let (addr, _) = serve(vec![r]).await;
    let timeout = Duration::from_millis(300);
    let started = std::time::Instant::now();
    let err = provider(addr, timeout)
        .generate(&request(2))
        .await
        .unwrap_err();
    assert_eq!(
        err,
        ProviderError::Timeout {
            after: timeout,
            sent: true
        }
    );
    assert_eq!(
        err.billing(),
        Billing::Unknown,
        "the request was sent: it may have been billed"
    );
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[tokio::test]
async fn refused_connection_is_a_transport_error() {
    // Bind and drop a listener to get a port nobody listens on.
    let addr = {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        l.local_addr().unwrap()
    };
    let err = provider(addr, Duration::from_secs(2))
        .generate(&request(2))
        .await
        .unwrap_err();
    assert!(
        matches!(err, ProviderError::Transport { sent: false, .. }),
        "{err:?}"
    );
    assert_eq!(err.billing(), Billing::Nothing, "never reached the model");
    assert_no_key(&err);
}

/// A server that answers `200` with headers and half a body, then closes the connection.
#[tokio::test]
async fn a_reply_cut_midway_has_an_unknown_cost() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let mut buf = vec![0u8; 64 * 1024];
            // Read the request head and body (one read suffices for a small request on loopback;
            // a second read picks up a body sent apart).
            let _ = socket.read(&mut buf).await;
            let head =
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 4000\r\n\r\n";
            let _ = socket.write_all(head.as_bytes()).await;
            let _ = socket
                .write_all(br#"{"choices":[{"message":{"content":"{\"flash"#)
                .await;
            let _ = socket.flush().await;
            // Dropped: the connection closes 3,9xx bytes short.
        }
    });
    let err = provider(addr, Duration::from_secs(5))
        .generate(&request(2))
        .await
        .unwrap_err();
    assert!(
        matches!(err, ProviderError::Transport { sent: true, .. }),
        "{err:?}"
    );
    assert_eq!(err.billing(), Billing::Unknown);
    assert!(err.is_retryable());
}

#[tokio::test]
async fn malformed_body_is_invalid() {
    let (addr, _) = serve(vec![reply(200, "{\"choices\": [")]).await;
    let err = provider(addr, Duration::from_secs(5))
        .generate(&request(2))
        .await
        .unwrap_err();
    assert!(matches!(err, ProviderError::InvalidResponse(_)), "{err:?}");
    assert_eq!(
        err.billing(),
        Billing::Unknown,
        "a 200 whose body is unreadable"
    );
}

#[tokio::test]
async fn content_outside_the_schema_is_bad_output_billed_at_its_usage() {
    let (addr, _) = serve(vec![
        completion(r#"{"summary":"Mitochondria make ATP"}"#),
        completion("I cannot produce JSON today."),
        completion(r#"{"flashcards":[]}"#),
        completion(r#"{"flashcards":[{"question":"Only a question"}]}"#),
        completion(""),
    ])
    .await;
    let p = provider(addr, Duration::from_secs(5));
    for _ in 0..5 {
        let err = p.generate(&request(2)).await.unwrap_err();
        assert!(matches!(err, ProviderError::BadOutput { .. }), "{err:?}");
        assert!(err.is_retryable(), "another attempt may answer better");
        assert_eq!(err.code(), "PROVIDER_BAD_OUTPUT");
        assert_eq!(err.billing(), Billing::Reported(USAGE));
    }
}

#[tokio::test]
async fn refusal_is_final_and_billed() {
    let usage = json!({"prompt_tokens": 321, "completion_tokens": 87});
    let (addr, _) = serve(vec![
        answer(
            json!({"content": null, "refusal": "I can't help with that."}),
            "stop",
            usage.clone(),
        ),
        answer(json!({"content": ""}), "content_filter", usage),
    ])
    .await;
    let p = provider(addr, Duration::from_secs(5));
    for _ in 0..2 {
        let err = p.generate(&request(2)).await.unwrap_err();
        assert!(matches!(err, ProviderError::Refused { .. }), "{err:?}");
        assert!(!err.is_retryable(), "asked again, the model refuses again");
        assert_eq!(err.code(), "PROVIDER_REFUSED");
        assert_eq!(err.billing(), Billing::Reported(USAGE));
    }
}

#[tokio::test]
async fn a_reply_cut_at_the_bound_is_truncated_and_billed_reasoning_included() {
    // A reasoning model that spent its whole bound thinking: no visible content at all.
    let thinking = json!({
        "prompt_tokens": 400,
        "completion_tokens": 272,
        "completion_tokens_details": {"reasoning_tokens": 272},
    });
    // A reply cut off inside the JSON.
    let cut = json!({"prompt_tokens": 400, "completion_tokens": 272});
    let (addr, _) = serve(vec![
        answer(json!({"content": ""}), "length", thinking),
        answer(
            json!({"content": "{\"flashcards\":[{\"question\":\"What do mitochondria"}),
            "length",
            cut,
        ),
    ])
    .await;
    let p = provider(addr, Duration::from_secs(5));
    let err = p.generate(&request(2)).await.unwrap_err();
    assert!(matches!(err, ProviderError::Truncated { .. }), "{err:?}");
    assert_eq!(err.code(), "OUTPUT_TRUNCATED");
    assert!(!err.is_retryable(), "the same bound cuts it again");
    assert_eq!(
        err.billing(),
        Billing::Reported(TokenUsage {
            input_tokens: 400,
            output_tokens: 272,
            reasoning_tokens: 272,
        }),
        "reasoning tokens are part of the billed output"
    );
    let err = p.generate(&request(2)).await.unwrap_err();
    assert!(matches!(err, ProviderError::Truncated { .. }), "{err:?}");
    assert_eq!(
        err.billing(),
        Billing::Reported(TokenUsage {
            input_tokens: 400,
            output_tokens: 272,
            reasoning_tokens: 0,
        })
    );
}

#[tokio::test]
async fn reasoning_tokens_reported_apart_are_billed_as_output() {
    let usage = json!({
        "prompt_tokens": 300,
        "completion_tokens": 50,
        "completion_tokens_details": {"reasoning_tokens": 900},
    });
    let (addr, _) = serve(vec![answer(
        json!({"role": "assistant", "content": TWO_CARDS}),
        "stop",
        usage,
    )])
    .await;
    let generation = provider(addr, Duration::from_secs(5))
        .generate(&request(2))
        .await
        .unwrap();
    assert_eq!(
        generation.usage,
        TokenUsage {
            input_tokens: 300,
            output_tokens: 950,
            reasoning_tokens: 900,
        }
    );
}

#[tokio::test]
async fn reasoning_effort_and_allowance_are_sent_and_bound_the_reservation() {
    let (addr, mock) = serve(vec![completion(TWO_CARDS)]).await;
    let p = OpenAiProvider::new(OpenAiConfig {
        reasoning_effort: Some("Low".into()),
        reasoning_tokens: 1000,
        ..config(addr, Duration::from_secs(5))
    })
    .unwrap();
    p.generate(&request(2)).await.unwrap();
    let seen = mock.seen.lock().unwrap();
    let body = &seen[0].1;
    assert_eq!(body["reasoning_effort"], "low");
    // Reasoning models take only max_completion_tokens: the bound of all billed output.
    assert_eq!(body["max_completion_tokens"], 2 * 120 + 32 + 1000);
    assert!(body.get("max_tokens").is_none());
    let bound = p.token_bounds().max_usage(&request(2));
    assert_eq!(
        bound.output_tokens,
        2 * 120 + 32 + 1000,
        "the reservation covers the reasoning allowance"
    );
}

#[tokio::test]
async fn server_without_json_schema_support_gets_plain_json_requests() {
    let (addr, mock) = serve(vec![
        reply(
            400,
            r#"{"error":{"message":"response_format type json_schema is not supported"}}"#,
        ),
        completion(TWO_CARDS),
        completion(TWO_CARDS),
    ])
    .await;
    let p = provider(addr, Duration::from_secs(5));
    assert_eq!(p.generate(&request(2)).await.unwrap().flashcards.len(), 2);
    assert_eq!(p.generate(&request(2)).await.unwrap().flashcards.len(), 2);
    let seen = mock.seen.lock().unwrap();
    assert_eq!(seen.len(), 3, "one retry, then remembered");
    assert!(seen[0].1.get("response_format").is_some());
    assert!(seen[1].1.get("response_format").is_none());
    assert!(seen[2].1.get("response_format").is_none());
}

#[tokio::test]
async fn no_key_sends_no_authorization_header() {
    let (addr, mock) = serve(vec![completion(TWO_CARDS)]).await;
    let p = OpenAiProvider::new(OpenAiConfig {
        base_url: format!("http://{addr}/v1"),
        model: "llama3.2".into(),
        api_key: None,
        ..config(addr, Duration::from_secs(5))
    })
    .unwrap();
    p.generate(&request(2)).await.unwrap();
    assert!(
        mock.seen.lock().unwrap()[0]
            .0
            .get("authorization")
            .is_none()
    );
}
