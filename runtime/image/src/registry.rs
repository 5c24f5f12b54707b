//! Talking to registries through oci-client: one client per endpoint (mirrors first,
//! then the registry), manifests fetched raw and blobs streamed into verifying writers.
//! An endpoint that fails with a registry error gives way to the next; content that
//! does not match its digest fails the pull at once.

use crate::blob::{BlobStore, BlobWriter};
use crate::error::{ImageError, Result};
use crate::manifest::{BlobRef, ACCEPTED, MANIFEST_LIMIT};
use crate::reference::ImageRef;
use crate::registry_config::{Endpoint, RegistriesConfig};
use futures::StreamExt;
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::errors::{DigestError, OciDistributionError};
use std::fmt;
use std::time::Duration;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const READ_TIMEOUT: Duration = Duration::from_secs(60);

/// Credentials for an image's registry, from the CRI `AuthConfig`. They are sent to the
/// registry itself, never to its mirrors.
#[derive(Clone, PartialEq, Eq)]
pub enum RegistryAuth {
    /// `username`/`password` (the CRI `auth` field is base64 `user:password`).
    Basic { username: String, password: String },
    /// A bearer token for the registry (the CRI `registry_token`).
    Bearer(String),
}

impl RegistryAuth {
    pub fn basic(username: String, password: String) -> RegistryAuth {
        RegistryAuth::Basic { username, password }
    }

    pub fn bearer(token: String) -> RegistryAuth {
        RegistryAuth::Bearer(token)
    }
}

impl fmt::Debug for RegistryAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RegistryAuth::Basic { username, .. } => {
                write!(
                    f,
                    "Basic {{ username: {username:?}, password: <redacted> }}"
                )
            }
            RegistryAuth::Bearer(_) => write!(f, "Bearer(<redacted>)"),
        }
    }
}

/// One image's endpoints, in the order to try them.
pub(crate) struct Remote {
    image: ImageRef,
    endpoints: Vec<(
        Endpoint,
        oci_client::Client,
        oci_client::secrets::RegistryAuth,
    )>,
}

/// A manifest document fetched from endpoint `endpoint` (an index into the list).
pub(crate) struct Fetched {
    pub endpoint: usize,
    pub bytes: Vec<u8>,
}

impl Remote {
    pub fn new(
        image: &ImageRef,
        registries: &RegistriesConfig,
        auth: Option<&RegistryAuth>,
    ) -> Remote {
        let endpoints = registries
            .endpoints(image.registry())
            .into_iter()
            .map(|ep| {
                let client = oci_client::Client::new(ClientConfig {
                    protocol: if ep.plain_http {
                        ClientProtocol::Http
                    } else {
                        ClientProtocol::Https
                    },
                    accept_invalid_certificates: ep.skip_verify,
                    platform_resolver: None,
                    connect_timeout: Some(CONNECT_TIMEOUT),
                    read_timeout: Some(READ_TIMEOUT),
                    ..ClientConfig::default()
                });
                let auth = match (ep.mirror, auth) {
                    (false, Some(RegistryAuth::Basic { username, password })) => {
                        oci_client::secrets::RegistryAuth::Basic(username.clone(), password.clone())
                    }
                    (false, Some(RegistryAuth::Bearer(t))) => {
                        oci_client::secrets::RegistryAuth::Bearer(t.clone())
                    }
                    _ => oci_client::secrets::RegistryAuth::Anonymous,
                };
                (ep, client, auth)
            })
            .collect();
        Remote {
            image: image.clone(),
            endpoints,
        }
    }

    /// Endpoint indexes with `first` first, then the rest in order.
    fn order(&self, first: usize) -> Vec<usize> {
        let mut v = vec![first];
        v.extend((0..self.endpoints.len()).filter(|&i| i != first));
        v
    }

    /// Fetches the manifest document the reference names (by tag or digest), from the
    /// first endpoint that serves it.
    pub async fn manifest(&self) -> Result<Fetched> {
        self.manifest_at(0, None).await
    }

    /// Fetches the manifest `digest` of this repository, `preferred` endpoint first.
    pub async fn manifest_by_digest(&self, preferred: usize, digest: &str) -> Result<Fetched> {
        self.manifest_at(preferred, Some(digest)).await
    }

    async fn manifest_at(&self, preferred: usize, digest: Option<&str>) -> Result<Fetched> {
        let mut failures = Vec::new();
        for i in self.order(preferred) {
            let (ep, client, auth) = &self.endpoints[i];
            let mut reference = self.image.at_host(&ep.host);
            if let Some(d) = digest {
                reference = reference.clone_with_digest(d.to_owned());
            }
            match client.pull_manifest_raw(&reference, auth, ACCEPTED).await {
                Ok((bytes, _)) => {
                    if bytes.len() as u64 > MANIFEST_LIMIT {
                        return Err(ImageError::format(
                            format!("manifest of {}", self.image),
                            format!(
                                "{} bytes is over the limit of {MANIFEST_LIMIT}",
                                bytes.len()
                            ),
                        ));
                    }
                    tracing::debug!(image = %self.image, endpoint = %ep.label(), "manifest fetched");
                    return Ok(Fetched {
                        endpoint: i,
                        bytes: bytes.to_vec(),
                    });
                }
                Err(e) => {
                    let e = map_error(e);
                    if !is_endpoint_failure(&e) {
                        return Err(e);
                    }
                    tracing::warn!(image = %self.image, endpoint = %ep.label(), error = %reason(&e), "manifest not available here");
                    failures.push(format!("{}: {}", ep.label(), reason(&e)));
                }
            }
        }
        Err(ImageError::registry(
            self.image.registry(),
            format!(
                "cannot get the manifest of {}: {}",
                self.image,
                failures.join("; ")
            ),
        ))
    }

    /// Streams `blob` into a fresh writer from `blobs`, `preferred` endpoint first.
    /// Returns the bytes downloaded.
    pub async fn blob(
        &self,
        preferred: usize,
        blob: &BlobRef,
        blobs: &BlobStore,
        limit: u64,
    ) -> Result<u64> {
        let mut failures = Vec::new();
        for i in self.order(preferred) {
            let (ep, client, auth) = &self.endpoints[i];
            let writer = blobs.writer(&blob.digest, Some(blob.size), limit)?;
            match self.stream_blob(client, auth, ep, blob, writer).await {
                Ok(n) => return Ok(n),
                Err(e) if is_endpoint_failure(&e) => {
                    tracing::warn!(blob = %blob.digest, endpoint = %ep.label(), error = %reason(&e), "blob not available here");
                    failures.push(format!("{}: {}", ep.label(), reason(&e)));
                }
                Err(e) => return Err(e),
            }
        }
        Err(ImageError::registry(
            self.image.registry(),
            format!(
                "cannot get blob {} of {}: {}",
                blob.digest,
                self.image,
                failures.join("; ")
            ),
        ))
    }

    async fn stream_blob(
        &self,
        client: &oci_client::Client,
        auth: &oci_client::secrets::RegistryAuth,
        ep: &Endpoint,
        blob: &BlobRef,
        mut writer: BlobWriter,
    ) -> Result<u64> {
        let reference = self.image.at_host(&ep.host);
        client
            .store_auth_if_needed(reference.resolve_registry(), auth)
            .await;
        let mut stream = client
            .pull_blob_stream(&reference, blob.digest.as_str())
            .await
            .map_err(map_error)?;
        if let Some(len) = stream.content_length {
            if len != blob.size {
                return Err(ImageError::format(
                    format!("blob {}", blob.digest),
                    format!(
                        "registry sends {len} bytes, its descriptor says {}",
                        blob.size
                    ),
                ));
            }
        }
        let mut n = 0u64;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(map_stream_error)?;
            n += chunk.len() as u64;
            writer.write(&chunk).await?;
        }
        writer.commit().await?;
        Ok(n)
    }
}

/// What went wrong at one endpoint, for the combined error.
fn reason(e: &ImageError) -> String {
    match e {
        ImageError::Registry { reason, .. } => reason.clone(),
        other => other.chain(),
    }
}

/// Errors worth trying the next endpoint for.
fn is_endpoint_failure(e: &ImageError) -> bool {
    matches!(e, ImageError::Registry { .. })
}

fn map_error(e: OciDistributionError) -> ImageError {
    match e {
        OciDistributionError::DigestError(DigestError::VerificationError { expected, actual }) => {
            ImageError::DigestMismatch { expected, actual }
        }
        other => ImageError::Registry {
            registry: String::new(),
            reason: chain(&other),
        },
    }
}

fn map_stream_error(e: std::io::Error) -> ImageError {
    if let Some(DigestError::VerificationError { expected, actual }) = e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<DigestError>())
    {
        return ImageError::DigestMismatch {
            expected: expected.clone(),
            actual: actual.clone(),
        };
    }
    ImageError::Registry {
        registry: String::new(),
        reason: format!("reading the blob: {}", chain(&e)),
    }
}

/// The message and its sources, `: `-separated (reqwest's own message hides the cause).
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(c) = source {
        let m = c.to_string();
        if !s.contains(&m) {
            s.push_str(": ");
            s.push_str(&m);
        }
        source = c.source();
    }
    s
}
