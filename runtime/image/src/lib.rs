//! Cocoon's image store: pulls OCI images from registries (or imports OCI layouts),
//! verifies every byte against its digest, and unpacks each image once into a
//! flattened root filesystem that pods' containers get an overlay on.
//!
//! ```text
//! ImageStore::pull("busybox")          normalized: docker.io/library/busybox:latest
//!   registry.rs   mirrors in order, then the registry (RegistriesConfig, hosts.toml-like)
//!   manifest.rs   index → linux/amd64 manifest → config + layers, limits checked
//!   blob.rs       stream → temp file, sha256 + size checked, fsync, rename
//!   unpack/       layers in order → <root>/tmp/unpack-…, diff_ids checked → rename
//!   index.rs      index.json: images, tags, digests, users (atomic rewrite)
//! ```
//!
//! # On disk
//!
//! ```text
//! <root>/index.json                 images, tags, repo digests, usage references
//! <root>/blobs/sha256/<hex>         manifests, configs, compressed layers
//! <root>/rootfs/<image id hex>/     the flattened root filesystem of an image
//! <root>/tmp/                       temp files and dirs; emptied at open
//! ```
//!
//! Everything appears by rename once complete, so a crash leaves at most temp entries
//! (removed at the next [`ImageStore::open`]) and blobs or rootfs dirs no image in the
//! index refers to (also removed at open).
//!
//! # One flattened rootfs per image
//!
//! Layers are applied in order into a single directory per image, rather than kept as
//! per-layer snapshots stacked with overlayfs (containerd's way). The guest then gets
//! one read-only tree per image (shared into the VM, with a per-container overlay on
//! top) instead of a stack of lower dirs, and whiteouts are resolved here once instead
//! of by every mount. The cost: base layers shared by two images are unpacked (and
//! stored) twice, and a new tag of an image that differs in its last layer is
//! unpacked in full. Compressed blobs are kept and shared between images, so a pull
//! never downloads a layer the store already has.
//!
//! # Untrusted input
//!
//! Registries, mirrors and layouts are untrusted. Every manifest, config and layer is
//! checked against its digest while it is written (a mismatch is
//! [`ImageError::DigestMismatch`]), and each layer's uncompressed stream against the
//! config's `diff_ids`. Manifests over 4 MiB, configs over 8 MiB, more than 256
//! layers, and layers over [`StoreLimits::max_layer_bytes`] are refused before they are
//! downloaded, and unpacking stops at [`StoreLimits::max_unpacked_bytes`]. (oci-client
//! reads a manifest response whole before we can check its size.) Unpacking resolves
//! every path component itself and keeps every entry inside the rootfs: see
//! `unpack/safe_path.rs`. Extended attributes (file capabilities included) are not
//! unpacked.

mod blob;
mod error;
mod image;
mod index;
mod install;
mod layout_import;
mod manifest;
mod pull;
mod reference;
mod registry;
mod registry_config;
mod store;
mod unpack;
mod usage;

#[cfg(test)]
mod testutil;

pub use error::{ErrorKind, ImageError};
pub use image::{FsUsage, Image, ImageConfig, PullStats};
pub use reference::ImageRef;
pub use registry::RegistryAuth;
pub use registry_config::{RegistriesConfig, RegistryHost};
pub use store::{ImageStore, StoreLimits};
