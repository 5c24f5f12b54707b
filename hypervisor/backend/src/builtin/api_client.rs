//! A client for cocoon-vmm's control API (`cocoon_vmm::api`): HTTP/1.1 over its unix
//! socket with hyper, one request per connection. The configuration sent is
//! cocoon-vmm's own [`cocoon_vmm::VmConfig`], serialized by the same serde code that
//! parses it, so the two sides cannot drift apart.

use std::path::{Path, PathBuf};
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::net::UnixStream;

/// How long one request may take, answer included (a start builds the whole VM:
/// guest memory, the kernel and initrd loaded, devices).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Why a request to the VMM's API failed.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("connect to {}", path.display())]
    Connect {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{request}: {source}")]
    Http {
        request: String,
        #[source]
        source: hyper::Error,
    },
    /// The VMM answered with an error; `message` is its own.
    #[error("{request}: {message} ({status})")]
    Status {
        request: String,
        status: u16,
        message: String,
    },
    #[error("{request}: no answer within {timeout:?}")]
    Timeout { request: String, timeout: Duration },
    #[error("{request}: {source}")]
    Request {
        request: String,
        #[source]
        source: hyper::http::Error,
    },
    #[error("{request}: the answer is not JSON: {source}")]
    Body {
        request: String,
        #[source]
        source: serde_json::Error,
    },
}

/// The API of one cocoon-vmm process.
#[derive(Debug, Clone)]
pub struct ApiClient {
    socket: PathBuf,
    timeout: Duration,
}

impl ApiClient {
    pub fn new(socket: impl Into<PathBuf>) -> ApiClient {
        ApiClient {
            socket: socket.into(),
            timeout: REQUEST_TIMEOUT,
        }
    }

    /// The same client with another per-request timeout.
    pub fn with_timeout(mut self, timeout: Duration) -> ApiClient {
        self.timeout = timeout;
        self
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// `PUT /vm/config`: the VM to build.
    pub async fn put_config(&self, config: &cocoon_vmm::VmConfig) -> Result<(), ApiError> {
        let body = serde_json::to_vec(config).map_err(|source| ApiError::Body {
            request: "PUT /vm/config".into(),
            source,
        })?;
        self.call(Method::PUT, "/vm/config", body).await.map(drop)
    }

    /// `PUT /vm/start`: builds and starts the configured VM.
    pub async fn start(&self) -> Result<(), ApiError> {
        self.call(Method::PUT, "/vm/start", Vec::new())
            .await
            .map(drop)
    }

    /// `PUT /vm/pause`: returns once every vCPU is parked.
    pub async fn pause(&self) -> Result<(), ApiError> {
        self.call(Method::PUT, "/vm/pause", Vec::new())
            .await
            .map(drop)
    }

    /// `PUT /vm/resume`.
    pub async fn resume(&self) -> Result<(), ApiError> {
        self.call(Method::PUT, "/vm/resume", Vec::new())
            .await
            .map(drop)
    }

    /// `PUT /vm/stop`: the VM ends and the process exits.
    pub async fn stop(&self) -> Result<(), ApiError> {
        self.call(Method::PUT, "/vm/stop", Vec::new())
            .await
            .map(drop)
    }

    /// `GET <path>` (`/vm`, `/vm/devices`, `/metrics`, `/vm/config`) as JSON.
    pub async fn get(&self, path: &str) -> Result<Value, ApiError> {
        let body = self.call(Method::GET, path, Vec::new()).await?;
        serde_json::from_slice(&body).map_err(|source| ApiError::Body {
            request: format!("GET {path}"),
            source,
        })
    }

    /// One request; a 2xx answer's body, or the VMM's error.
    pub async fn call(&self, method: Method, path: &str, body: Vec<u8>) -> Result<Bytes, ApiError> {
        let request = format!("{method} {path}");
        match tokio::time::timeout(self.timeout, self.exchange(&request, method, path, body)).await
        {
            Ok(result) => result,
            Err(_) => Err(ApiError::Timeout {
                request,
                timeout: self.timeout,
            }),
        }
    }

    async fn exchange(
        &self,
        request: &str,
        method: Method,
        path: &str,
        body: Vec<u8>,
    ) -> Result<Bytes, ApiError> {
        let req = Request::builder()
            .method(method)
            .uri(path)
            .header(hyper::header::HOST, "localhost")
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body)))
            .map_err(|source| ApiError::Request {
                request: request.to_owned(),
                source,
            })?;
        let stream =
            UnixStream::connect(&self.socket)
                .await
                .map_err(|source| ApiError::Connect {
                    path: self.socket.clone(),
                    source,
                })?;
        let http = |source| ApiError::Http {
            request: request.to_owned(),
            source,
        };
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(http)?;
        // The connection is driven alongside the request; it ends when the server
        // closes it after the answer.
        let conn = tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "VMM API connection");
            }
        });
        let result = async {
            let response = sender.send_request(req).await.map_err(http)?;
            let status = response.status();
            let body = response.into_body().collect().await.map_err(http)?;
            Ok((status, body.to_bytes()))
        }
        .await;
        conn.abort();
        let (status, body) = result?;
        if status.is_success() {
            return Ok(body);
        }
        Err(ApiError::Status {
            request: request.to_owned(),
            status: status.as_u16(),
            message: error_message(status, &body),
        })
    }
}

/// The `error` of a JSON error body, or the body itself, or the status.
fn error_message(status: StatusCode, body: &[u8]) -> String {
    serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| v.get("error").and_then(Value::as_str).map(str::to_owned))
        .or_else(|| {
            let text = String::from_utf8_lossy(body).trim().to_owned();
            (!text.is_empty()).then_some(text)
        })
        .unwrap_or_else(|| status.to_string())
}
