//! Integration tests of the service: the real binary (and real Redis, Prometheus, Alertmanager,
//! Chromium, an OTLP receiver) started by each test. One binary, so the crate links once.

mod support;

mod alerts_e2e;
mod api_http;
mod api_security;
mod batch;
mod billed_failures;
mod budget_faults;
mod cancellation;
mod clock_skew;
mod console_browser;
mod dashboard_queries;
mod demo_page_browser;
mod drain;
mod http_limits;
mod lost_replies;
mod openapi;
mod redis_failover;
mod redis_multi_process;
mod sse_scale;
mod sse_streams;
mod tenant_isolation;
mod trace_export;
mod validation_props;
