//! The OTLP/HTTP (protobuf) trace exporter and its HTTP client.
//!
//! The batch span processor exports from a thread of its own, outside the Tokio runtime; the
//! client hands each request to the runtime the process already runs (the same reqwest and
//! rustls as everything else, no second HTTP stack), and the exporter thread waits for the
//! answer.

use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use opentelemetry::KeyValue;
use opentelemetry_http::{HttpClient, HttpError};
use opentelemetry_otlp::{WithExportConfig as _, WithHttpConfig as _};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SdkTracerProvider;

/// Largest collector answer read (a partial-success message is a few bytes).
const MAX_RESPONSE_BYTES: usize = 64 * 1024;
/// Default export timeout (`OTEL_EXPORTER_OTLP_TIMEOUT` overrides it in the exporter).
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// Sends the exporter's requests through the process's Tokio runtime.
#[derive(Debug, Clone)]
struct RuntimeClient {
    client: reqwest::Client,
    runtime: tokio::runtime::Handle,
}

#[async_trait::async_trait]
impl HttpClient for RuntimeClient {
    async fn send_bytes(&self, request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
        let request: reqwest::Request = request.try_into()?;
        let client = self.client.clone();
        let task = self.runtime.spawn(async move {
            let mut response = client.execute(request).await?;
            let status = response.status();
            let headers = std::mem::take(response.headers_mut());
            let mut body = Vec::new();
            while let Some(chunk) = response.chunk().await? {
                if body.len() + chunk.len() > MAX_RESPONSE_BYTES {
                    break;
                }
                body.extend_from_slice(&chunk);
            }
            Ok::<_, reqwest::Error>((status, headers, body))
        });
        let (status, headers, body) = task.await??;
        let mut response = Response::builder().status(status).body(Bytes::from(body))?;
        *response.headers_mut() = headers;
        Ok(response)
    }
}

/// The tracer provider: OTLP/HTTP protobuf exporter, batch processor, sampler and resource
/// from the standard environment variables.
pub(super) fn provider(service_name: &str, version: &str) -> anyhow::Result<SdkTracerProvider> {
    let runtime = tokio::runtime::Handle::try_current()
        .map_err(|_| anyhow::anyhow!("telemetry must be initialised inside the Tokio runtime"))?;
    let client = reqwest::Client::builder()
        .timeout(DEFAULT_TIMEOUT)
        .build()
        .map_err(|e| anyhow::anyhow!("cannot build the OTLP HTTP client: {e}"))?;
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
        .with_http_client(RuntimeClient { client, runtime })
        .build()?;
    let mut resource = Resource::builder();
    // `OTEL_SERVICE_NAME` (read by the resource detectors) wins over the mode's default.
    if std::env::var("OTEL_SERVICE_NAME").is_err_and(|_| {
        !std::env::var("OTEL_RESOURCE_ATTRIBUTES").is_ok_and(|a| a.contains("service.name="))
    }) {
        resource = resource.with_service_name(service_name.to_owned());
    }
    let resource = resource
        .with_attribute(KeyValue::new("service.version", version.to_owned()))
        .build();
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource)
        .build())
}
