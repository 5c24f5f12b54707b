//! The store's index, `<root>/index.json`: images with their tags and digests, and the
//! usage references that keep them. Written whole, atomically (temp file, fsync,
//! rename, fsync of the directory), after every change.

use crate::error::{ImageError, IoContext, Result};
use crate::image::ImageConfig;
use crate::reference::{is_lower_hex, is_sha256_digest, ImageRef, SHA256_PREFIX};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::io::Write;
use std::path::Path;

const VERSION: u32 = 1;
/// Ids shorter than this are not matched by prefix (Docker's short id length).
const MIN_ID_PREFIX: usize = 12;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Index {
    pub version: u32,
    /// By id (`sha256:<config digest>`).
    pub images: BTreeMap<String, ImageRecord>,
    /// User (a container id, usually) → the ids of the images it holds.
    pub users: BTreeMap<String, BTreeSet<String>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ImageRecord {
    pub id: String,
    pub repo_tags: Vec<String>,
    pub repo_digests: Vec<String>,
    pub size: u64,
    pub config: ImageConfig,
    /// Every blob of the image: manifest(s), config, layers.
    pub blobs: Vec<String>,
    pub pulled_at_unix_ns: u64,
}

/// How a name matched an image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Found {
    /// By full id, id prefix or repo digest: the whole image.
    Image(String),
    /// By a repo tag (normalized): `(id, tag)`.
    Tag(String, String),
}

impl Found {
    pub fn id(&self) -> &str {
        match self {
            Found::Image(id) | Found::Tag(id, _) => id,
        }
    }
}

impl Index {
    pub fn new() -> Index {
        Index {
            version: VERSION,
            ..Index::default()
        }
    }

    /// Reads the index at `path`; an absent file is an empty index.
    pub fn load(path: &Path) -> Result<Index> {
        let bytes = match std::fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Index::new()),
            Err(e) => return Err(ImageError::io("read", path, e)),
        };
        let index: Index = serde_json::from_slice(&bytes)
            .map_err(|e| ImageError::format(path.display().to_string(), e))?;
        if index.version != VERSION {
            return Err(ImageError::format(
                path.display().to_string(),
                format!("index version {} is not {VERSION}", index.version),
            ));
        }
        index
            .check()
            .map_err(|e| ImageError::format(path.display().to_string(), e))?;
        Ok(index)
    }

    /// Every id and blob digest is a sha256 digest (they name paths under the root).
    fn check(&self) -> Result<(), String> {
        for (key, image) in &self.images {
            if *key != image.id || !is_sha256_digest(key) {
                return Err(format!("bad image id {key:?}"));
            }
            if let Some(bad) = image.blobs.iter().find(|b| !is_sha256_digest(b)) {
                return Err(format!("image {key}: bad blob digest {bad:?}"));
            }
        }
        Ok(())
    }

    /// Writes the index to `path` atomically.
    pub fn save(&self, path: &Path) -> Result<()> {
        let dir = path.parent().unwrap_or(Path::new("."));
        let bytes = serde_json::to_vec_pretty(self).map_err(|e| ImageError::format("index", e))?;
        let mut tmp = tempfile::Builder::new()
            .prefix(".index.json.")
            .tempfile_in(dir)
            .ctx("create a temp file in", dir)?;
        tmp.write_all(&bytes).ctx("write", tmp.path())?;
        tmp.as_file().sync_all().ctx("fsync", tmp.path())?;
        tmp.persist(path)
            .map_err(|e| ImageError::io("rename a temp file to", path, e.error))?;
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .ctx("fsync", dir)
    }

    /// Finds the image `name_or_id` names: a full id `sha256:<hex>`, a unique id prefix
    /// of at least 12 hex digits (with or without `sha256:`), a repo digest
    /// `name@sha256:…`, or a repo tag (normalized, so `busybox` finds
    /// `docker.io/library/busybox:latest`).
    pub fn find(&self, name_or_id: &str) -> Option<Found> {
        let hex = name_or_id.strip_prefix(SHA256_PREFIX).unwrap_or(name_or_id);
        if hex.len() >= MIN_ID_PREFIX && hex.len() <= 64 && is_lower_hex(hex) {
            let mut matches = self.images.keys().filter(|id| {
                id.strip_prefix(SHA256_PREFIX)
                    .is_some_and(|h| h.starts_with(hex))
            });
            if let (Some(id), None) = (matches.next(), matches.next()) {
                return Some(Found::Image(id.clone()));
            }
        }
        let r = ImageRef::parse(name_or_id).ok()?;
        match (r.digest(), r.repo_tag()) {
            (Some(d), _) => {
                let want = r.repo_digest(d);
                self.images
                    .values()
                    .find(|i| i.repo_digests.contains(&want))
                    .map(|i| Found::Image(i.id.clone()))
            }
            (None, Some(tag)) => self
                .images
                .values()
                .find(|i| i.repo_tags.contains(&tag))
                .map(|i| Found::Tag(i.id.clone(), tag)),
            (None, None) => None,
        }
    }

    /// Points `tag` at image `id`, taking it from any other image (which keeps its other
    /// names, or stays untagged until removed).
    pub fn set_tag(&mut self, id: &str, tag: &str) {
        for image in self.images.values_mut() {
            if image.id != id {
                image.repo_tags.retain(|t| t != tag);
            }
        }
        if let Some(image) = self.images.get_mut(id) {
            if !image.repo_tags.iter().any(|t| t == tag) {
                image.repo_tags.push(tag.to_owned());
                image.repo_tags.sort();
            }
        }
    }

    /// Takes `tag` from whichever image has it.
    pub fn remove_tag(&mut self, tag: &str) {
        for image in self.images.values_mut() {
            image.repo_tags.retain(|t| t != tag);
        }
    }

    pub fn add_digest(&mut self, id: &str, repo_digest: &str) {
        if let Some(image) = self.images.get_mut(id) {
            if !image.repo_digests.iter().any(|d| d == repo_digest) {
                image.repo_digests.push(repo_digest.to_owned());
                image.repo_digests.sort();
            }
        }
    }

    /// The users holding image `id`, sorted.
    pub fn users_of(&self, id: &str) -> Vec<String> {
        self.users
            .iter()
            .filter(|(_, ids)| ids.contains(id))
            .map(|(u, _)| u.clone())
            .collect()
    }

    /// Every blob some image still needs.
    pub fn referenced_blobs(&self) -> HashSet<&str> {
        self.images
            .values()
            .flat_map(|i| i.blobs.iter().map(String::as_str))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id_char: char, tags: &[&str]) -> ImageRecord {
        ImageRecord {
            id: format!("sha256:{}", id_char.to_string().repeat(64)),
            repo_tags: tags.iter().map(|t| t.to_string()).collect(),
            repo_digests: vec![],
            size: 1,
            config: ImageConfig::default(),
            blobs: vec![format!("sha256:{}", id_char.to_string().repeat(64))],
            pulled_at_unix_ns: 0,
        }
    }

    fn index() -> Index {
        let mut ix = Index::new();
        for r in [
            record('a', &["docker.io/library/busybox:latest"]),
            record('b', &["quay.io/x/y:v1"]),
        ] {
            ix.images.insert(r.id.clone(), r);
        }
        ix
    }

    #[test]
    fn names_ids_and_prefixes() {
        let mut ix = index();
        let a = format!("sha256:{}", "a".repeat(64));
        assert_eq!(
            ix.find("busybox"),
            Some(Found::Tag(
                a.clone(),
                "docker.io/library/busybox:latest".into()
            ))
        );
        assert_eq!(ix.find("docker.io/library/busybox:latest").unwrap().id(), a);
        assert_eq!(ix.find(&a), Some(Found::Image(a.clone())));
        assert_eq!(ix.find(&"a".repeat(12)), Some(Found::Image(a.clone())));
        assert_eq!(
            ix.find(&format!("sha256:{}", "a".repeat(20))).unwrap().id(),
            a
        );
        assert_eq!(
            ix.find(&"a".repeat(11)),
            None,
            "too short for a prefix, and no such tag"
        );
        assert_eq!(ix.find("busybox:other"), None);
        assert_eq!(ix.find("NOT A NAME"), None);
        let d = format!("sha256:{}", "c".repeat(64));
        ix.add_digest(&a, &format!("docker.io/library/busybox@{d}"));
        assert_eq!(
            ix.find(&format!("busybox@{d}")),
            Some(Found::Image(a.clone()))
        );
    }

    #[test]
    fn ambiguous_prefixes_match_nothing() {
        let mut ix = Index::new();
        for id in ["sha256:aaaaaaaaaaaa1", "sha256:aaaaaaaaaaaa2"] {
            let mut r = record('a', &[]);
            r.id = format!("{id}{}", "0".repeat(64 - 13));
            ix.images.insert(r.id.clone(), r);
        }
        assert_eq!(ix.find("aaaaaaaaaaaa"), None);
        assert!(ix.find("aaaaaaaaaaaa1").is_some());
    }

    #[test]
    fn tags_move() {
        let mut ix = index();
        let b = format!("sha256:{}", "b".repeat(64));
        ix.set_tag(&b, "docker.io/library/busybox:latest");
        assert_eq!(ix.find("busybox").unwrap().id(), b);
        let a = format!("sha256:{}", "a".repeat(64));
        assert!(
            ix.images[&a].repo_tags.is_empty(),
            "the old image stays, untagged"
        );
        assert_eq!(ix.images[&b].repo_tags.len(), 2);
    }

    #[test]
    fn saves_and_loads_atomically() {
        let t = tempfile::tempdir().unwrap();
        let path = t.path().join("index.json");
        assert_eq!(Index::load(&path).unwrap(), Index::new());
        let mut ix = index();
        ix.users
            .entry("c1".into())
            .or_default()
            .insert(format!("sha256:{}", "a".repeat(64)));
        ix.save(&path).unwrap();
        assert_eq!(Index::load(&path).unwrap(), ix);
        assert_eq!(
            std::fs::read_dir(t.path()).unwrap().count(),
            1,
            "no temp file left"
        );
        assert_eq!(ix.users_of(&format!("sha256:{}", "a".repeat(64))), ["c1"]);
        assert_eq!(ix.referenced_blobs().len(), 2);
        let mut bad = ix.clone();
        let mut r = record('d', &[]);
        r.id = "sha256:../../etc".into();
        bad.images.insert(r.id.clone(), r);
        bad.save(&path).unwrap();
        assert!(matches!(Index::load(&path), Err(ImageError::Format { .. })));
        std::fs::write(&path, b"{ broken").unwrap();
        assert!(matches!(Index::load(&path), Err(ImageError::Format { .. })));
    }
}
