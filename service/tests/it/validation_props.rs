//! Property tests of request validation: the real JSON extractor and its error mapping, then
//! `api::jobs::validate`, and the `Idempotency-Key` header check, on arbitrary input.
//!
//! - Arbitrary bytes and arbitrary JSON never panic, and every rejection is a 400 with code
//!   `INVALID_JSON` (not JSON) or `VALIDATION_ERROR` (JSON, with a `details` entry per bad field).
//! - Valid bodies are accepted, trimmed, and round-trip: the validated request, sent again as a
//!   body, validates to itself.
//! - The `Idempotency-Key` check accepts exactly 1-200 visible ASCII characters and returns
//!   the key unchanged; everything else is 400 `INVALID_IDEMPOTENCY_KEY`.

use axum::Json;
use axum::body::Body;
use axum::extract::FromRequest;
use axum::http::{HeaderMap, HeaderValue, Request, StatusCode};
use clap::Parser;
use flashcard_core::job::JobRequest;
use flashcard_service::api::error::{ApiError, json_rejection};
use flashcard_service::api::jobs::{idempotency_key, validate};
use flashcard_service::config::{ApiSettings, Cli};
use proptest::prelude::*;
use serde_json::{Map, Value, json};

fn settings() -> ApiSettings {
    let cli = Cli::try_parse_from(["flashcard-service", "standalone"]).expect("default settings");
    cli.mode.settings().api.clone()
}

const FIELDS: &[&str] = &[
    "body",
    "content",
    "subject",
    "topic",
    "userId",
    "cardCount",
    "count",
];

/// What the handler does before the store: the JSON extractor, then validation.
fn check_body(bytes: Vec<u8>, headers: &HeaderMap) -> Result<JobRequest, ApiError> {
    let mut request = Request::builder()
        .method("POST")
        .uri("/api/ai/generate-flashcards")
        .header("content-type", "application/json")
        .body(Body::from(bytes))
        .unwrap();
    *request.headers_mut() = {
        let mut h = headers.clone();
        h.insert("content-type", HeaderValue::from_static("application/json"));
        h
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let parsed = runtime.block_on(Json::<Value>::from_request(request, &()));
    let Json(body) = parsed.map_err(json_rejection)?;
    validate(&body, headers, &settings(), None)
}

fn assert_rejection(e: &ApiError, allowed: &[&str]) {
    assert_eq!(e.status, StatusCode::BAD_REQUEST, "{e:?}");
    assert!(allowed.contains(&e.code), "{e:?}");
    if e.code == "VALIDATION_ERROR" {
        let details = e
            .details
            .as_ref()
            .and_then(Value::as_array)
            .expect("details");
        assert!(!details.is_empty(), "{e:?}");
        for d in details {
            let field = d["field"].as_str().expect("field");
            assert!(FIELDS.contains(&field), "{e:?}");
            assert!(d["message"].as_str().is_some_and(|m| !m.is_empty()));
        }
    }
}

/// Any JSON value, biased towards objects with the body's field names.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(|f| json!(f)),
        (0u64..60).prop_map(|n| json!(n)),
        "\\PC{0,30}".prop_map(Value::String),
        "[ \t\n]{0,3}[a-z ]{0,10}[ \t\n]{0,3}".prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 24, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::vec(
                (
                    prop_oneof![
                        prop::sample::select(vec![
                            "content",
                            "subject",
                            "topic",
                            "userId",
                            "cardCount",
                            "count"
                        ])
                        .prop_map(str::to_owned),
                        "[a-zA-Z]{1,8}",
                    ],
                    inner
                ),
                0..8
            )
            .prop_map(|pairs| Value::Object(pairs.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

fn user_id_header() -> impl Strategy<Value = HeaderMap> {
    prop::option::of("[ -~]{0,20}").prop_map(|v| {
        let mut headers = HeaderMap::new();
        if let Some(v) = v
            && let Ok(v) = HeaderValue::from_str(&v)
        {
            headers.insert("user-id", v);
        }
        headers
    })
}

/// A non-blank text of at most `max` characters, maybe padded with spaces. It starts with a
/// character that is not white space in Unicode's sense (what `str::trim` removes, e.g. U+3000
/// too), so it never trims to nothing.
fn text(max: usize) -> impl Strategy<Value = String> {
    (
        "[ \t]{0,2}",
        proptest::string::string_regex(&format!("[\\PC&&\\S][\\PC]{{0,{}}}", max.min(60) - 5))
            .unwrap(),
        "[ \t]{0,2}",
    )
        .prop_map(|(a, b, c)| format!("{a}{b}{c}"))
        .prop_filter("within the limit", move |s| s.chars().count() <= max)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic_and_are_rejected_cleanly(
        bytes in prop::collection::vec(any::<u8>(), 0..200),
        headers in user_id_header(),
    ) {
        if let Err(e) = check_body(bytes, &headers) {
            assert_rejection(&e, &["INVALID_JSON", "VALIDATION_ERROR"]);
        }
    }

    #[test]
    fn arbitrary_json_never_panics_and_every_rejection_is_a_validation_error(
        body in json_value(),
        headers in user_id_header(),
    ) {
        let bytes = serde_json::to_vec(&body).unwrap();
        match check_body(bytes, &headers) {
            Ok(request) => {
                // Accepted: every field within its limits and trimmed.
                for s in [&request.content, &request.subject, &request.topic, &request.user_id] {
                    prop_assert!(!s.is_empty() && s.trim() == s.as_str());
                }
                prop_assert!((1..=50).contains(&request.card_count));
            }
            Err(e) => assert_rejection(&e, &["VALIDATION_ERROR"]),
        }
    }

    #[test]
    fn valid_bodies_are_accepted_and_round_trip(
        content in text(50_000),
        subject in text(200),
        topic in text(200),
        user in text(128),
        count in prop::option::of(1u32..=50),
        count_as_float in any::<bool>(),
        user_in_header in any::<bool>(),
    ) {
        let mut body = json!({"content": content, "subject": subject, "topic": topic});
        let mut headers = HeaderMap::new();
        if user_in_header && user.is_ascii() && HeaderValue::from_str(&user).is_ok() {
            headers.insert("user-id", HeaderValue::from_str(&user).unwrap());
        } else {
            body["userId"] = json!(user);
        }
        if let Some(n) = count {
            body["cardCount"] = if count_as_float { json!(f64::from(n)) } else { json!(n) };
        }
        let request = validate(&body, &headers, &settings(), None)
            .unwrap_or_else(|e| panic!("{body} rejected: {e:?}"));
        prop_assert_eq!(&request.content, content.trim());
        prop_assert_eq!(&request.subject, subject.trim());
        prop_assert_eq!(&request.topic, topic.trim());
        prop_assert_eq!(&request.user_id, user.trim());
        prop_assert_eq!(request.card_count, count.unwrap_or(10));
        // The validated request is a valid body of its own, and validates to itself.
        let again = validate(&serde_json::to_value(&request).unwrap(), &HeaderMap::new(), &settings(), None)
            .expect("the validated request validates");
        prop_assert_eq!(again, request);
    }

    #[test]
    fn idempotency_keys_are_exactly_visible_ascii(bytes in prop::collection::vec(any::<u8>(), 0..210)) {
        let Ok(value) = HeaderValue::from_bytes(&bytes) else {
            // Not a header value at all (CR, LF, NUL...): hyper would not deliver it.
            return Ok(());
        };
        let mut headers = HeaderMap::new();
        headers.insert("idempotency-key", value);
        let valid = !bytes.is_empty()
            && bytes.len() <= 200
            && bytes.iter().all(|b| (0x21..=0x7e).contains(b));
        match idempotency_key(&headers) {
            Ok(Some(key)) => {
                prop_assert!(valid, "accepted {bytes:?}");
                prop_assert_eq!(key.as_bytes(), &bytes[..]);
            }
            Ok(None) => prop_assert!(false, "a present header was ignored"),
            Err(e) => {
                prop_assert!(!valid, "refused a valid key {bytes:?}");
                prop_assert_eq!(e.status, StatusCode::BAD_REQUEST);
                prop_assert_eq!(e.code, "INVALID_IDEMPOTENCY_KEY");
            }
        }
    }

    #[test]
    fn visible_ascii_keys_round_trip(key in "[!-~]{1,200}") {
        let mut headers = HeaderMap::new();
        headers.insert("idempotency-key", HeaderValue::from_str(&key).unwrap());
        prop_assert_eq!(idempotency_key(&headers).unwrap(), Some(key));
    }
}

#[test]
fn no_header_means_no_key() {
    assert_eq!(idempotency_key(&HeaderMap::new()).unwrap(), None);
    let mut spaced = HeaderMap::new();
    spaced.insert("idempotency-key", HeaderValue::from_static("a b"));
    assert_eq!(
        idempotency_key(&spaced).unwrap_err().code,
        "INVALID_IDEMPOTENCY_KEY"
    );
}
