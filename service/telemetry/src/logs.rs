//! Log lines with the trace and span ids of the span they were written in.
//!
//! JSON lines get `"trace_id"` and `"span_id"` as their first fields, text lines get
//! `trace_id=... span_id=...` at the end, so a log search finds the trace and a trace finds its
//! logs. Outside a traced span (and always while tracing is off) lines are written unchanged,
//! without an extra copy.

use std::fmt::Write as _;

use opentelemetry::trace::TraceContextExt;
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// Wraps a formatter and adds the current trace and span ids.
pub(super) struct WithTraceIds<F> {
    inner: F,
    json: bool,
}

impl<F> WithTraceIds<F> {
    pub(super) fn new(inner: F, json: bool) -> Self {
        Self { inner, json }
    }
}

/// Inserts the ids into one formatted line (`line` ends with a newline).
fn splice(line: &str, json: bool, trace_id: &str, span_id: &str) -> String {
    let mut out = String::with_capacity(line.len() + 72);
    if json && let Some(rest) = line.strip_prefix('{') {
        let _ = write!(
            out,
            "{{\"trace_id\":\"{trace_id}\",\"span_id\":\"{span_id}\""
        );
        if !rest.trim_start().starts_with('}') {
            out.push(',');
        }
        out.push_str(rest);
        return out;
    }
    let body = line.strip_suffix('\n').unwrap_or(line);
    let _ = writeln!(out, "{body} trace_id={trace_id} span_id={span_id}");
    out
}

impl<S, N, F> FormatEvent<S, N> for WithTraceIds<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> std::fmt::Result {
        if !super::tracing_enabled() {
            return self.inner.format_event(ctx, writer, event);
        }
        // The OpenTelemetry layer makes an entered span's context the current one.
        let cx = opentelemetry::Context::current();
        let span = cx.span();
        let sc = span.span_context();
        if !sc.is_valid() {
            return self.inner.format_event(ctx, writer, event);
        }
        let mut line = String::new();
        self.inner
            .format_event(ctx, Writer::new(&mut line), event)?;
        let ids = splice(
            &line,
            self.json,
            &sc.trace_id().to_string(),
            &sc.span_id().to_string(),
        );
        writer.write_str(&ids)
    }
}

#[cfg(test)]
mod tests {
    use super::splice;

    #[test]
    fn ids_go_first_in_json_and_last_in_text() {
        let t = "4bf92f3577b34da6a3ce929d0e0e4736";
        let s = "00f067aa0ba902b7";
        let json = splice("{\"level\":\"INFO\",\"message\":\"hi\"}\n", true, t, s);
        let parsed: serde_json::Value = serde_json::from_str(json.trim()).unwrap();
        assert_eq!(parsed["trace_id"], t);
        assert_eq!(parsed["span_id"], s);
        assert_eq!(parsed["message"], "hi");
        assert!(json.ends_with('\n'));
        let empty = splice("{}\n", true, t, s);
        assert!(
            serde_json::from_str::<serde_json::Value>(empty.trim()).is_ok(),
            "{empty}"
        );
        let text = splice("INFO job started\n", false, t, s);
        assert_eq!(text, format!("INFO job started trace_id={t} span_id={s}\n"));
    }
}
