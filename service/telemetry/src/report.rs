//! Sentry error reports, on when `SENTRY_DSN` is set (`SENTRY_ENVIRONMENT` names the
//! environment, `SENTRY_RELEASE` overrides the release).
//!
//! What goes there: every `ERROR` log line as an event (with the lines before it as
//! breadcrumbs), panics, and each job that failed for good ([`job_failed`]), tagged with the
//! job id and the trace id. What never goes there: request bodies and headers (no request data
//! is attached at all, `send_default_pii` stays off), the study text and the prompt, API keys
//! and tokens, Redis URLs. Every event and breadcrumb passes through [`redact`] before it
//! leaves the process, as a second line of defence for text the code did not mean to send.

use std::borrow::Cow;

use sentry::protocol::{Breadcrumb, Context, Event, Value};

/// Starts the Sentry client when `SENTRY_DSN` is set; an invalid DSN is reported and ignored.
pub(super) fn init(version: &'static str) -> Option<sentry::ClientInitGuard> {
    let dsn = std::env::var("SENTRY_DSN")
        .ok()
        .filter(|d| !d.trim().is_empty())?;
    let dsn = match dsn.trim().parse::<sentry::types::Dsn>() {
        Ok(dsn) => dsn,
        Err(e) => {
            eprintln!("telemetry: SENTRY_DSN is not a valid DSN ({e}); Sentry stays off");
            return None;
        }
    };
    let release = std::env::var("SENTRY_RELEASE")
        .ok()
        .filter(|r| !r.trim().is_empty())
        .map(Cow::Owned)
        .unwrap_or(Cow::Borrowed(version));
    // Traces go to OpenTelemetry; Sentry gets errors only (its default traces sample rate is 0).
    let mut options = sentry::ClientOptions::default();
    options.dsn = Some(dsn);
    options.release = Some(release);
    options.environment = std::env::var("SENTRY_ENVIRONMENT").ok().map(Cow::Owned);
    options.send_default_pii = false;
    options.before_send = Some(std::sync::Arc::new(|event| Some(scrub_event(event))));
    options.before_breadcrumb = Some(std::sync::Arc::new(|crumb| Some(scrub_breadcrumb(crumb))));
    let guard = sentry::init(options);
    guard.is_enabled().then_some(guard)
}

/// The tracing layer: `ERROR` lines become events, `WARN` and `INFO` lines breadcrumbs; spans
/// are not turned into Sentry spans.
pub(super) fn layer<S>() -> sentry::integrations::tracing::SentryLayer<S>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    use sentry::integrations::tracing::EventFilter;
    sentry::integrations::tracing::layer()
        .event_filter(|meta| match *meta.level() {
            tracing::Level::ERROR => EventFilter::Event,
            tracing::Level::WARN | tracing::Level::INFO => EventFilter::Breadcrumb,
            _ => EventFilter::Ignore,
        })
        .span_filter(|_| false)
}

/// Reports a job that failed for good (no-op without Sentry).
pub fn job_failed(job_id: &str, error: &str) {
    if sentry::Hub::current()
        .client()
        .is_none_or(|c| !c.is_enabled())
    {
        return;
    }
    let trace_id = super::current_trace_id();
    sentry::with_scope(
        |scope| {
            scope.set_tag("job_id", job_id);
            if let Some(trace_id) = &trace_id {
                scope.set_tag("trace_id", trace_id);
            }
            // One issue for all failed jobs of one kind of error, not one per job.
            scope.set_fingerprint(Some(["job-failed", "{{ default }}"].as_slice()));
        },
        || sentry::capture_message(&format!("job failed: {error}"), sentry::Level::Error),
    );
}

/// Removes what must never leave the process from a text: credentials in URLs (any
/// `scheme://user:password@` and every Redis URL as a whole), bearer tokens, and strings that
/// look like API keys (`sk-...`).
pub fn redact(text: &str) -> Cow<'_, str> {
    let lower = text.to_ascii_lowercase();
    let suspicious = ["://", "bearer ", "sk-", "redis"]
        .iter()
        .any(|needle| lower.contains(needle));
    if !suspicious {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len());
    for word in split_keep(text) {
        out.push_str(&redact_word(word));
    }
    // `Bearer <token>`: the token is the word after the scheme.
    let mut result = String::with_capacity(out.len());
    let mut rest = out.as_str();
    while let Some(at) = rest.to_ascii_lowercase().find("bearer ") {
        let (head, tail) = rest.split_at(at + "bearer ".len());
        result.push_str(head);
        let end = tail
            .find(|c: char| c.is_whitespace() || c == '"' || c == '\'' || c == ',')
            .unwrap_or(tail.len());
        if end > 0 {
            result.push_str("[redacted]");
        }
        rest = &tail[end..];
    }
    result.push_str(rest);
    Cow::Owned(result)
}

/// Splits into words and the separators between them, keeping both.
fn split_keep(text: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut start = 0;
    let mut in_word = false;
    for (i, c) in text.char_indices() {
        let word_char =
            !(c.is_whitespace() || matches!(c, '"' | '\'' | ',' | '(' | ')' | '<' | '>'));
        if word_char != in_word {
            if i > start {
                parts.push(&text[start..i]);
            }
            start = i;
            in_word = word_char;
        }
    }
    if start < text.len() {
        parts.push(&text[start..]);
    }
    parts
}

fn redact_word(word: &str) -> Cow<'_, str> {
    let lower = word.to_ascii_lowercase();
    if let Some(scheme_end) = lower.find("://") {
        if lower[..scheme_end].contains("redis") {
            return Cow::Owned(format!("{}://[redacted]", &word[..scheme_end]));
        }
        let authority_end = word[scheme_end + 3..]
            .find('/')
            .map_or(word.len(), |i| scheme_end + 3 + i);
        if let Some(at) = word[..authority_end].rfind('@') {
            return Cow::Owned(format!(
                "{}://[redacted]@{}",
                &word[..scheme_end],
                &word[at + 1..]
            ));
        }
        return Cow::Borrowed(word);
    }
    if let Some(at) = lower.find("sk-")
        && word.len() - at > 12
        && (at == 0 || !word.as_bytes()[at - 1].is_ascii_alphanumeric())
    {
        return Cow::Owned(format!("{}sk-[redacted]", &word[..at]));
    }
    Cow::Borrowed(word)
}

fn scrub_string(s: &mut String) {
    if let Cow::Owned(clean) = redact(s) {
        *s = clean;
    }
}

fn scrub_value(value: &mut Value) {
    match value {
        Value::String(s) => scrub_string(s),
        Value::Array(items) => items.iter_mut().for_each(scrub_value),
        Value::Object(map) => {
            for (key, v) in map.iter_mut() {
                if is_secret_key(key) {
                    *v = Value::String("[redacted]".into());
                } else {
                    scrub_value(v);
                }
            }
        }
        _ => {}
    }
}

/// Field names whose values are secrets whatever they look like.
fn is_secret_key(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    [
        "authorization",
        "api_key",
        "apikey",
        "token",
        "password",
        "secret",
        "redis_url",
        "dsn",
    ]
    .iter()
    .any(|s| key.contains(s))
}

fn scrub_map(map: &mut std::collections::BTreeMap<String, Value>) {
    for (key, v) in map.iter_mut() {
        if is_secret_key(key) {
            *v = Value::String("[redacted]".into());
        } else {
            scrub_value(v);
        }
    }
}

/// The event without request data or user, every text passed through [`redact`].
fn scrub_event(mut event: Event<'static>) -> Event<'static> {
    event.request = None;
    event.user = None;
    if let Some(m) = &mut event.message {
        scrub_string(m);
    }
    if let Some(entry) = &mut event.logentry {
        scrub_string(&mut entry.message);
        entry.params.iter_mut().for_each(scrub_value);
    }
    for exception in event.exception.values.iter_mut() {
        if let Some(v) = &mut exception.value {
            scrub_string(v);
        }
    }
    for crumb in event.breadcrumbs.values.iter_mut() {
        *crumb = scrub_breadcrumb(std::mem::take(crumb));
    }
    scrub_map(&mut event.extra);
    for (_, tag) in event.tags.iter_mut() {
        scrub_string(tag);
    }
    for (_, context) in event.contexts.iter_mut() {
        if let Context::Other(map) = context {
            scrub_map(map);
        }
    }
    event
}

fn scrub_breadcrumb(mut crumb: Breadcrumb) -> Breadcrumb {
    if let Some(m) = &mut crumb.message {
        scrub_string(m);
    }
    scrub_map(&mut crumb.data);
    crumb
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_redacted() {
        let cases = [
            (
                "cannot reach redis://:hunter2@10.0.0.1:6379/0 now",
                "cannot reach redis://[redacted] now",
            ),
            (
                "rediss+sentinel://u:p@h:26379/m failed",
                "rediss+sentinel://[redacted] failed",
            ),
            (
                "GET https://user:pw@api.example.org/v1 refused",
                "GET https://[redacted]@api.example.org/v1 refused",
            ),
            (
                "header Authorization: Bearer abc.def-ghi sent",
                "header Authorization: Bearer [redacted] sent",
            ),
            (
                "invalid key sk-proj-abcdefghijklmnop123",
                "invalid key sk-[redacted]",
            ),
            ("job failed: timeout", "job failed: timeout"),
            (
                "see https://example.org/docs",
                "see https://example.org/docs",
            ),
        ];
        for (input, expected) in cases {
            assert_eq!(redact(input), expected, "{input}");
        }
    }

    #[test]
    fn events_lose_request_data_and_secret_fields() {
        let mut event = Event {
            message: Some("connect redis://:pw@h:1/ failed".into()),
            request: Some(Default::default()),
            ..Default::default()
        };
        event
            .extra
            .insert("api_key".into(), Value::String("sk-x".into()));
        event
            .extra
            .insert("detail".into(), Value::String("Bearer tok".into()));
        let event = scrub_event(event);
        assert!(event.request.is_none());
        assert_eq!(
            event.message.as_deref(),
            Some("connect redis://[redacted] failed")
        );
        assert_eq!(event.extra["api_key"], "[redacted]");
        assert_eq!(event.extra["detail"], "Bearer [redacted]");
    }
}
