//! Image references, normalized the way Docker and containerd do: `busybox` is
//! `docker.io/library/busybox:latest`.

use crate::error::{ImageError, Result};
use std::fmt;

/// The only digest algorithm the store supports (blobs are stored by sha256).
pub(crate) const SHA256_PREFIX: &str = "sha256:";

/// A parsed and normalized image reference: registry, repository, and either a tag or
/// a digest.
///
/// A reference that carries both (`busybox:1.36@sha256:…`) is pinned by its digest:
/// the tag is dropped, as Docker does, so a moved tag can never label the wrong image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRef {
    registry: String,
    repository: String,
    tag: Option<String>,
    digest: Option<String>,
}

impl ImageRef {
    /// Parses and normalizes `reference`; [`ImageError::InvalidReference`] names it.
    pub fn parse(reference: &str) -> Result<ImageRef> {
        let parsed = oci_client::Reference::try_from(reference)
            .map_err(|e| ImageError::invalid_reference(reference, e))?;
        if !parsed
            .repository()
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-/".contains(&b))
        {
            return Err(ImageError::invalid_reference(
                reference,
                "repository names are lowercase letters, digits and . _ - /",
            ));
        }
        let digest = parsed.digest().map(str::to_owned);
        if let Some(d) = &digest {
            if !is_sha256_digest(d) {
                return Err(ImageError::invalid_reference(
                    reference,
                    "only sha256 digests are supported",
                ));
            }
        }
        let tag = match digest {
            Some(_) => None,
            None => parsed.tag().map(str::to_owned),
        };
        Ok(ImageRef {
            registry: parsed.registry().to_owned(),
            repository: parsed.repository().to_owned(),
            tag,
            digest,
        })
    }

    /// The registry host as written (`docker.io` for Docker Hub), the key of
    /// [`RegistriesConfig::hosts`](crate::RegistriesConfig::hosts).
    pub fn registry(&self) -> &str {
        &self.registry
    }

    pub fn repository(&self) -> &str {
        &self.repository
    }

    /// The tag; `None` when the reference is pinned by digest.
    pub fn tag(&self) -> Option<&str> {
        self.tag.as_deref()
    }

    pub fn digest(&self) -> Option<&str> {
        self.digest.as_deref()
    }

    /// `registry/repository`, e.g. `docker.io/library/busybox`.
    pub fn name(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }

    /// `registry/repository:tag`, when the reference has a tag.
    pub fn repo_tag(&self) -> Option<String> {
        self.tag.as_ref().map(|t| format!("{}:{t}", self.name()))
    }

    /// `registry/repository@digest`.
    pub fn repo_digest(&self, digest: &str) -> String {
        format!("{}@{digest}", self.name())
    }

    /// The oci-client reference for fetching this image from `host` (the registry
    /// itself or a mirror of it), by digest when pinned, else by tag.
    pub(crate) fn at_host(&self, host: &str) -> oci_client::Reference {
        match (&self.digest, &self.tag) {
            (Some(d), _) => oci_client::Reference::with_digest(
                host.to_owned(),
                self.repository.clone(),
                d.clone(),
            ),
            (None, t) => oci_client::Reference::with_tag(
                host.to_owned(),
                self.repository.clone(),
                t.clone().unwrap_or_else(|| "latest".to_owned()),
            ),
        }
    }
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.digest, &self.tag) {
            (Some(d), _) => write!(f, "{}@{d}", self.name()),
            (None, Some(t)) => write!(f, "{}:{t}", self.name()),
            (None, None) => write!(f, "{}", self.name()),
        }
    }
}

/// `sha256:` followed by 64 lowercase hex digits.
pub(crate) fn is_sha256_digest(s: &str) -> bool {
    s.strip_prefix(SHA256_PREFIX)
        .is_some_and(|hex| hex.len() == 64 && is_lower_hex(hex))
}

pub(crate) fn is_lower_hex(s: &str) -> bool {
    s.bytes()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// The hex part of a validated `sha256:` digest.
pub(crate) fn digest_hex(digest: &str) -> &str {
    digest.strip_prefix(SHA256_PREFIX).unwrap_or(digest)
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn short_names_are_docker_hub_library_latest() {
        let r = ImageRef::parse("busybox").unwrap();
        assert_eq!(r.to_string(), "docker.io/library/busybox:latest");
        assert_eq!(r.registry(), "docker.io");
        assert_eq!(
            r.repo_tag().as_deref(),
            Some("docker.io/library/busybox:latest")
        );
        for same in [
            "busybox:latest",
            "library/busybox",
            "docker.io/busybox",
            "index.docker.io/library/busybox:latest",
        ] {
            assert_eq!(ImageRef::parse(same).unwrap(), r, "{same}");
        }
    }

    #[test]
    fn registries_with_ports_and_digests() {
        let r = ImageRef::parse("127.0.0.1:5000/test/app:v1").unwrap();
        assert_eq!(r.registry(), "127.0.0.1:5000");
        assert_eq!(r.repository(), "test/app");
        assert_eq!(r.tag(), Some("v1"));
        let pinned = ImageRef::parse(&format!("quay.io/a/b:v2@{D}")).unwrap();
        assert_eq!(pinned.tag(), None, "the digest wins");
        assert_eq!(pinned.digest(), Some(D));
        assert_eq!(pinned.to_string(), format!("quay.io/a/b@{D}"));
        assert_eq!(pinned.repo_digest(D), format!("quay.io/a/b@{D}"));
        let at = pinned.at_host("127.0.0.1:5000");
        assert_eq!(at.digest(), Some(D));
        assert_eq!(at.registry(), "127.0.0.1:5000");
    }

    #[test]
    fn invalid_references_are_named() {
        for bad in [
            "",
            "UPPER/case",
            "a b",
            "busybox@sha256:abc",
            "busybox@md5:0123456789abcdef0123456789abcdef",
            "busybox@sha512:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
        ] {
            let e = ImageRef::parse(bad).unwrap_err();
            assert!(
                matches!(&e, ImageError::InvalidReference { reference, .. } if reference == bad),
                "{bad}: {e}"
            );
        }
    }

    #[test]
    fn digests() {
        assert!(is_sha256_digest(D));
        assert!(!is_sha256_digest(&D.to_uppercase()));
        assert!(!is_sha256_digest("sha256:12"));
        assert_eq!(digest_hex(D).len(), 64);
    }
}
