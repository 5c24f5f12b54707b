//! Pod and container ids: 64 random hex digits, as containerd makes them; requests may
//! name them by a unique prefix.

use super::error::{DaemonError, Result};
use std::collections::BTreeMap;
use std::io::Read;

/// A new random id.
pub fn new_id() -> String {
    let mut b = [0u8; 32];
    let filled = std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut b));
    if filled.is_err() {
        // Never expected on Linux; fall back on time and pid rather than fail a pod.
        let t = super::now_ns().to_le_bytes();
        let p = std::process::id().to_le_bytes();
        for (i, x) in b.iter_mut().enumerate() {
            *x = t[i % 8] ^ p[i % 4].rotate_left(i as u32);
        }
    }
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// The entry whose id is `id` or starts with it (when only one does).
pub fn find<'a, T>(map: &'a BTreeMap<String, T>, id: &str, kind: &'static str) -> Result<&'a T> {
    if id.is_empty() {
        return Err(super::error::invalid(
            format!("{}_id", kind.replace(' ', "_")),
            "is empty",
        ));
    }
    if let Some(v) = map.get(id) {
        return Ok(v);
    }
    let mut matches = map
        .range(id.to_string()..)
        .take_while(|(k, _)| k.starts_with(id));
    match (matches.next(), matches.next()) {
        (Some((_, v)), None) => Ok(v),
        (None, _) => Err(DaemonError::NotFound {
            kind,
            id: id.to_string(),
        }),
        (Some((a, _)), Some((b, _))) => Err(DaemonError::Ambiguous {
            kind,
            id: id.to_string(),
            matches: format!("{a}, {b}, …"),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_random_hex() {
        let a = new_id();
        assert_eq!(a.len(), 64);
        assert!(a.bytes().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, new_id());
    }

    #[test]
    fn prefixes_resolve_when_unique() {
        let mut m = BTreeMap::new();
        m.insert("abc1".to_string(), 1);
        m.insert("abc2".to_string(), 2);
        m.insert("def".to_string(), 3);
        assert_eq!(*find(&m, "abc1", "pod").unwrap(), 1);
        assert_eq!(*find(&m, "d", "pod").unwrap(), 3);
        assert!(matches!(
            find(&m, "abc", "pod"),
            Err(DaemonError::Ambiguous { .. })
        ));
        assert!(matches!(
            find(&m, "x", "pod"),
            Err(DaemonError::NotFound { .. })
        ));
        assert!(matches!(
            find(&m, "", "pod sandbox"),
            Err(DaemonError::InvalidArgument { .. })
        ));
    }
}
