//! Manifests, indexes and image configs (OCI and Docker v2 schema 2), checked before
//! anything they name is fetched.

use crate::error::{ImageError, Result};
use crate::image::ImageConfig;
use crate::reference::is_sha256_digest;
use crate::unpack::Compression;
use oci_spec::image::{Arch, Descriptor, ImageConfiguration, ImageIndex, ImageManifest, Os};

pub(crate) const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub(crate) const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub(crate) const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub(crate) const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
/// What we ask registries for, preferred first.
pub(crate) const ACCEPTED: &[&str] = &[OCI_INDEX, DOCKER_LIST, OCI_MANIFEST, DOCKER_MANIFEST];

const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";

/// Manifests and indexes larger than this are refused (containerd uses 4 MiB too).
pub(crate) const MANIFEST_LIMIT: u64 = 4 << 20;
/// Image configs larger than this are refused.
pub(crate) const CONFIG_LIMIT: u64 = 8 << 20;
/// More layers than this is refused (overlayfs stacks end at 128 lower dirs anyway).
const MAX_LAYERS: usize = 256;

/// A manifest document: an index to choose from, or an image manifest.
#[derive(Debug)]
pub(crate) enum Document {
    Index(Box<ImageIndex>),
    Manifest(Box<ImageManifest>),
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct Peek {
    schema_version: Option<i64>,
    media_type: Option<String>,
    manifests: Option<serde_json::Value>,
}

/// Parses a manifest or index; `what` names it in errors.
pub(crate) fn parse_document(bytes: &[u8], what: &str) -> Result<Document> {
    if bytes.len() as u64 > MANIFEST_LIMIT {
        return Err(ImageError::format(
            what,
            format!(
                "{} bytes is over the limit of {MANIFEST_LIMIT}",
                bytes.len()
            ),
        ));
    }
    let peek: Peek = serde_json::from_slice(bytes).map_err(|e| ImageError::format(what, e))?;
    if peek.schema_version != Some(2) {
        return Err(ImageError::format(
            what,
            format!(
                "schemaVersion {:?} is not supported (only 2)",
                peek.schema_version
            ),
        ));
    }
    let is_index = match peek.media_type.as_deref() {
        Some(OCI_INDEX | DOCKER_LIST) => true,
        Some(OCI_MANIFEST | DOCKER_MANIFEST) => false,
        Some(other) => {
            return Err(ImageError::format(
                what,
                format!("unsupported media type {other}"),
            ))
        }
        None => peek.manifests.is_some(),
    };
    if is_index {
        serde_json::from_slice(bytes)
            .map(|i| Document::Index(Box::new(i)))
            .map_err(|e| ImageError::format(what, e))
    } else {
        serde_json::from_slice(bytes)
            .map(|m| Document::Manifest(Box::new(m)))
            .map_err(|e| ImageError::format(what, e))
    }
}

/// The linux/amd64 manifest of an index (one without a variant preferred).
pub(crate) fn select_platform<'a>(index: &'a ImageIndex, what: &str) -> Result<&'a Descriptor> {
    let amd64 = |d: &&Descriptor| {
        d.platform()
            .as_ref()
            .is_some_and(|p| *p.os() == Os::Linux && *p.architecture() == Arch::Amd64)
    };
    let plain = index
        .manifests()
        .iter()
        .filter(amd64)
        .find(|d| d.platform().as_ref().is_some_and(|p| p.variant().is_none()));
    if let Some(d) = plain.or_else(|| index.manifests().iter().find(amd64)) {
        return Ok(d);
    }
    let have: Vec<String> = index
        .manifests()
        .iter()
        .filter_map(|d| d.platform().as_ref())
        .map(|p| format!("{}/{}", p.os(), p.architecture()))
        .collect();
    Err(ImageError::format(
        what,
        format!("no linux/amd64 image (has: {})", have.join(", ")),
    ))
}

/// A blob to fetch: digest, size, media type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct BlobRef {
    pub digest: String,
    pub size: u64,
    pub media_type: String,
}

impl BlobRef {
    fn from_descriptor(d: &Descriptor, what: &str) -> Result<BlobRef> {
        let digest = d.digest().to_string();
        if !is_sha256_digest(&digest) {
            return Err(ImageError::format(
                what,
                format!("digest {digest} is not sha256 (the only algorithm supported)"),
            ));
        }
        Ok(BlobRef {
            digest,
            size: d.size(),
            media_type: d.media_type().to_string(),
        })
    }

    /// The layer compression its media type names (`None`: sniff).
    pub fn compression(&self) -> Option<Compression> {
        Compression::from_media_type(&self.media_type)
    }
}

/// What an image manifest asks us to fetch, checked against the limits.
#[derive(Debug, Clone)]
pub(crate) struct ImagePlan {
    pub config: BlobRef,
    pub layers: Vec<BlobRef>,
}

impl ImagePlan {
    pub fn from_manifest(m: &ImageManifest, what: &str, max_layer_bytes: u64) -> Result<ImagePlan> {
        let config = BlobRef::from_descriptor(m.config(), what)?;
        if config.media_type != OCI_CONFIG && config.media_type != DOCKER_CONFIG {
            return Err(ImageError::format(
                what,
                format!(
                    "not a container image (config media type {})",
                    config.media_type
                ),
            ));
        }
        if config.size > CONFIG_LIMIT {
            return Err(ImageError::format(
                what,
                format!(
                    "config of {} bytes is over the limit of {CONFIG_LIMIT}",
                    config.size
                ),
            ));
        }
        if m.layers().len() > MAX_LAYERS {
            return Err(ImageError::format(
                what,
                format!(
                    "{} layers is over the limit of {MAX_LAYERS}",
                    m.layers().len()
                ),
            ));
        }
        let layers = m
            .layers()
            .iter()
            .map(|d| BlobRef::from_descriptor(d, what))
            .collect::<Result<Vec<_>>>()?;
        if let Some(big) = layers.iter().find(|l| l.size > max_layer_bytes) {
            return Err(ImageError::format(
                what,
                format!(
                    "layer {} of {} bytes is over the limit of {max_layer_bytes}",
                    big.digest, big.size
                ),
            ));
        }
        Ok(ImagePlan { config, layers })
    }

    /// Compressed size of the layers.
    pub fn size(&self) -> u64 {
        self.layers.iter().map(|l| l.size).sum()
    }

    /// Every blob the image needs: config first, then layers.
    pub fn blobs(&self) -> impl Iterator<Item = &BlobRef> {
        std::iter::once(&self.config).chain(&self.layers)
    }
}

/// The parts of an image config the store uses.
#[derive(Debug, Clone)]
pub(crate) struct ParsedConfig {
    pub config: ImageConfig,
    /// Digests of the uncompressed layers, in order.
    pub diff_ids: Vec<String>,
}

/// Parses an image config and checks it matches the manifest's `layers` count and is
/// for linux/amd64.
pub(crate) fn parse_config(bytes: &[u8], what: &str, layers: usize) -> Result<ParsedConfig> {
    let c: ImageConfiguration =
        serde_json::from_slice(bytes).map_err(|e| ImageError::format(what, e))?;
    if *c.os() != Os::Linux || *c.architecture() != Arch::Amd64 {
        return Err(ImageError::format(
            what,
            format!(
                "image is for {}/{}, not linux/amd64",
                c.os(),
                c.architecture()
            ),
        ));
    }
    let diff_ids = c.rootfs().diff_ids().clone();
    if diff_ids.len() != layers {
        return Err(ImageError::format(
            what,
            format!(
                "{} diff_ids for {layers} layers in the manifest",
                diff_ids.len()
            ),
        ));
    }
    if let Some(bad) = diff_ids.iter().find(|d| !is_sha256_digest(d)) {
        return Err(ImageError::format(
            what,
            format!("diff_id {bad:?} is not sha256"),
        ));
    }
    Ok(ParsedConfig {
        config: ImageConfig::from_oci(c.config().as_ref()),
        diff_ids,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const D1: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";
    const D2: &str = "sha256:2222222222222222222222222222222222222222222222222222222222222222";

    fn manifest(media_type: &str, config_type: &str, layer_size: u64) -> String {
        format!(
            r#"{{"schemaVersion":2,"mediaType":"{media_type}",
               "config":{{"mediaType":"{config_type}","digest":"{D1}","size":100}},
               "layers":[{{"mediaType":"application/vnd.docker.image.rootfs.diff.tar.gzip","digest":"{D2}","size":{layer_size}}}]}}"#
        )
    }

    #[test]
    fn docker_and_oci_manifests() {
        for mt in [DOCKER_MANIFEST, OCI_MANIFEST] {
            let Document::Manifest(m) =
                parse_document(manifest(mt, DOCKER_CONFIG, 5).as_bytes(), "m").unwrap()
            else {
                panic!("{mt}: not a manifest");
            };
            let plan = ImagePlan::from_manifest(&m, "m", 10).unwrap();
            assert_eq!(plan.config.digest, D1);
            assert_eq!(plan.layers[0].compression(), Some(Compression::Gzip));
            assert_eq!(plan.size(), 5);
            assert_eq!(plan.blobs().count(), 2);
            let e = ImagePlan::from_manifest(&m, "m", 4).unwrap_err();
            assert!(e.to_string().contains("over the limit"), "{e}");
        }
        let Document::Manifest(helm) = parse_document(
            manifest(OCI_MANIFEST, "application/vnd.cncf.helm.config.v1+json", 1).as_bytes(),
            "m",
        )
        .unwrap() else {
            panic!()
        };
        assert!(ImagePlan::from_manifest(&helm, "m", 10).is_err());
    }

    #[test]
    fn indexes_resolve_to_linux_amd64() {
        let index = format!(
            r#"{{"schemaVersion":2,"mediaType":"{DOCKER_LIST}","manifests":[
                {{"mediaType":"{DOCKER_MANIFEST}","digest":"{D1}","size":1,"platform":{{"os":"linux","architecture":"arm64"}}}},
                {{"mediaType":"{DOCKER_MANIFEST}","digest":"{D2}","size":1,"platform":{{"os":"linux","architecture":"amd64"}}}}]}}"#
        );
        let Document::Index(i) = parse_document(index.as_bytes(), "i").unwrap() else {
            panic!("not an index");
        };
        assert_eq!(select_platform(&i, "i").unwrap().digest().to_string(), D2);
        let arm_only = index.replace("amd64", "s390x");
        let Document::Index(i) = parse_document(arm_only.as_bytes(), "i").unwrap() else {
            panic!("not an index");
        };
        let e = select_platform(&i, "i").unwrap_err();
        assert!(e.to_string().contains("linux/arm64, linux/s390x"), "{e}");
    }

    #[test]
    fn bad_documents_are_format_errors() {
        for bad in [
            "not json".to_owned(),
            r#"{"schemaVersion":1,"name":"x"}"#.to_owned(),
            r#"{"schemaVersion":2,"mediaType":"text/plain"}"#.to_owned(),
            r#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json"}"#
                .to_owned(),
        ] {
            let e = parse_document(bad.as_bytes(), "doc").unwrap_err();
            assert!(
                matches!(&e, ImageError::Format { what, .. } if what == "doc"),
                "{e}"
            );
        }
        let huge = vec![b' '; MANIFEST_LIMIT as usize + 1];
        assert!(parse_document(&huge, "doc").is_err());
        let md5 = manifest(OCI_MANIFEST, OCI_CONFIG, 1)
            .replace(D2, "md5:0123456789abcdef0123456789abcdef");
        if let Ok(Document::Manifest(m)) = parse_document(md5.as_bytes(), "m") {
            assert!(ImagePlan::from_manifest(&m, "m", 10).is_err());
        }
    }

    #[test]
    fn configs() {
        let c = format!(
            r#"{{"architecture":"amd64","os":"linux",
               "config":{{"User":"1000","Env":["A=1"],"Cmd":["sh"],"ExposedPorts":{{"80/tcp":{{}}}},"Labels":{{"k":"v"}},"StopSignal":"SIGINT"}},
               "rootfs":{{"type":"layers","diff_ids":["{D1}"]}}}}"#
        );
        let p = parse_config(c.as_bytes(), "c", 1).unwrap();
        assert_eq!(p.config.user, "1000");
        assert_eq!(p.config.cmd, ["sh"]);
        assert_eq!(p.config.exposed_ports, ["80/tcp"]);
        assert_eq!(p.config.labels["k"], "v");
        assert_eq!(p.config.stop_signal, "SIGINT");
        assert_eq!(p.diff_ids, [D1]);
        assert!(parse_config(c.as_bytes(), "c", 2)
            .unwrap_err()
            .to_string()
            .contains("diff_ids"));
        let arm = c.replace("amd64", "arm64");
        assert!(parse_config(arm.as_bytes(), "c", 1)
            .unwrap_err()
            .to_string()
            .contains("linux/arm64"));
        let null_config = r#"{"architecture":"amd64","os":"linux","config":{"Env":null,"Cmd":null},"rootfs":{"type":"layers","diff_ids":[]}}"#;
        assert_eq!(
            parse_config(null_config.as_bytes(), "c", 0).unwrap().config,
            ImageConfig::default()
        );
    }
}
