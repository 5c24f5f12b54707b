//! Per-registry mirrors and transport settings, after containerd's `hosts.toml` model;
//! see [`RegistriesConfig`].

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Registry hosts with settings, keyed by the host as it appears in image references
/// (`docker.io`, `quay.io`, `127.0.0.1:5000`), after containerd's `hosts.toml` model.
///
/// cocoond embeds it under `[registries]` in its TOML config:
///
/// ```toml
/// [registries.hosts."docker.io"]
/// # tried in order before registry-1.docker.io; the scheme decides http or https
/// mirrors = ["http://127.0.0.1:5000", "https://mirror.gcr.io"]
///
/// [registries.hosts."registry.internal:5000"]
/// plain_http = true
///
/// [registries.hosts."quay.example"]
/// skip_verify = true
/// ```
///
/// A pull of an image on host `H` tries each of `H`'s mirrors in order, then `H`
/// itself; an endpoint that cannot serve the manifest (unreachable, 404, refused…) is
/// logged and the next one is tried. Blobs are fetched from the endpoint that served
/// the manifest first, then from the others in order. Everything fetched is verified
/// against its digest whichever endpoint served it, so a mirror can make a pull fail
/// but never make it return other content than the manifest names; content that does
/// not match its digest fails the pull at once rather than falling through to the next
/// endpoint.
///
/// Hosts without an entry are reached over HTTPS with verified certificates. Check a
/// config with [`validate`](Self::validate) before use ([`ImageStore::open`](crate::ImageStore::open) does).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RegistriesConfig {
    #[serde(default)]
    pub hosts: BTreeMap<String, RegistryHost>,
}

/// How to reach one registry host.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RegistryHost {
    /// Mirror endpoints, `http://host[:port]` or `https://host[:port]` (no path), tried
    /// in order before the registry itself. Credentials given for the registry are not
    /// sent to its mirrors (they are pulled from anonymously).
    pub mirrors: Vec<String>,
    /// Reach the registry itself over plain HTTP instead of HTTPS.
    pub plain_http: bool,
    /// Accept any TLS certificate from the registry and from its `https://` mirrors.
    pub skip_verify: bool,
}

/// One place an image can be fetched from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Endpoint {
    /// `host[:port]`, what oci-client builds URLs from.
    pub host: String,
    pub plain_http: bool,
    pub skip_verify: bool,
    pub mirror: bool,
}

impl Endpoint {
    /// How logs and errors name it: the mirror URL, or the registry host.
    pub fn label(&self) -> String {
        match (self.mirror, self.plain_http) {
            (false, _) => self.host.clone(),
            (true, true) => format!("mirror http://{}", self.host),
            (true, false) => format!("mirror https://{}", self.host),
        }
    }
}

impl RegistriesConfig {
    /// Checks every host key and mirror URL; the error names the field, e.g.
    /// `hosts."docker.io".mirrors[1]: …`.
    pub fn validate(&self) -> Result<(), String> {
        for (host, settings) in &self.hosts {
            let field = format!("hosts.{host:?}");
            check_host_port(host).map_err(|e| format!("{field}: {e}"))?;
            for (i, mirror) in settings.mirrors.iter().enumerate() {
                parse_mirror(mirror).map_err(|e| format!("{field}.mirrors[{i}]: {e}"))?;
            }
        }
        Ok(())
    }

    /// Where to fetch images of `registry` from, in the order to try them: the mirrors,
    /// then the registry itself. Assumes [`validate`](Self::validate) passed; a mirror
    /// that does not parse is skipped.
    pub(crate) fn endpoints(&self, registry: &str) -> Vec<Endpoint> {
        let settings = self.hosts.get(registry).cloned().unwrap_or_default();
        let mut endpoints: Vec<Endpoint> = settings
            .mirrors
            .iter()
            .filter_map(|m| parse_mirror(m).ok())
            .map(|(plain_http, host)| Endpoint {
                host,
                plain_http,
                skip_verify: settings.skip_verify && !plain_http,
                mirror: true,
            })
            .collect();
        endpoints.push(Endpoint {
            host: registry.to_owned(),
            plain_http: settings.plain_http,
            skip_verify: settings.skip_verify,
            mirror: false,
        });
        endpoints
    }
}

/// `http://host[:port]` → `(true, "host[:port]")`; a trailing `/` is allowed, a path,
/// query, fragment or user info is not.
fn parse_mirror(url: &str) -> Result<(bool, String), String> {
    let (plain_http, rest) = if let Some(rest) = url.strip_prefix("http://") {
        (true, rest)
    } else if let Some(rest) = url.strip_prefix("https://") {
        (false, rest)
    } else {
        return Err(format!("{url:?} must start with http:// or https://"));
    };
    let authority = rest.strip_suffix('/').unwrap_or(rest);
    if authority.contains(['/', '?', '#']) {
        return Err(format!("{url:?}: mirror paths are not supported"));
    }
    check_host_port(authority).map_err(|e| format!("{url:?}: {e}"))?;
    Ok((plain_http, authority.to_owned()))
}

/// `host` or `host:port`: a DNS name or IPv4 address, or `[IPv6]`.
fn check_host_port(s: &str) -> Result<(), String> {
    if s.is_empty() {
        return Err("empty host".into());
    }
    if s.contains("://") {
        return Err(format!("{s:?} is a URL; write the host alone"));
    }
    if s.contains('@') {
        return Err(format!("{s:?}: user info is not supported"));
    }
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        let (ip6, after) = rest
            .split_once(']')
            .ok_or_else(|| format!("{s:?}: unclosed '['"))?;
        if ip6.parse::<std::net::Ipv6Addr>().is_err() {
            return Err(format!("{s:?}: bad IPv6 address"));
        }
        match after {
            "" => (ip6, None),
            p => (
                ip6,
                Some(
                    p.strip_prefix(':')
                        .ok_or_else(|| format!("{s:?}: junk after ']'"))?,
                ),
            ),
        }
    } else {
        match s.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (s, None),
        }
    };
    if let Some(p) = port {
        if p.parse::<u16>().map_or(true, |p| p == 0) {
            return Err(format!("{s:?}: bad port {p:?}"));
        }
    }
    if !s.starts_with('[')
        && (host.is_empty()
            || !host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-'))
    {
        return Err(format!("{s:?}: bad host name"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(toml_text: &str) -> Result<RegistriesConfig, String> {
        toml::from_str(toml_text).map_err(|e| e.to_string())
    }

    #[test]
    fn parses_hosts_toml_style() {
        let c = config(
            r#"
            [hosts."docker.io"]
            mirrors = ["http://127.0.0.1:5000", "https://mirror.example/"]
            [hosts."registry.internal:5000"]
            plain_http = true
            "#,
        )
        .unwrap();
        c.validate().unwrap();
        let eps = c.endpoints("docker.io");
        assert_eq!(eps.len(), 3);
        assert_eq!(eps[0].host, "127.0.0.1:5000");
        assert!(eps[0].plain_http && eps[0].mirror);
        assert_eq!(eps[1].host, "mirror.example");
        assert!(!eps[1].plain_http);
        assert_eq!(eps[2].host, "docker.io");
        assert!(!eps[2].mirror && !eps[2].plain_http);
        let internal = c.endpoints("registry.internal:5000");
        assert_eq!(internal.len(), 1);
        assert!(internal[0].plain_http);
        assert_eq!(
            c.endpoints("quay.io").len(),
            1,
            "unlisted hosts: upstream only"
        );
        assert_eq!(eps[0].label(), "mirror http://127.0.0.1:5000");
    }

    #[test]
    fn unknown_fields_are_refused() {
        assert!(config("[hosts.\"docker.io\"]\nmirror = []\n").is_err());
        assert!(config("other = 1\n").is_err());
        assert_eq!(config("").unwrap(), RegistriesConfig::default());
    }

    #[test]
    fn validation_names_the_field() {
        let c = config(
            r#"
            [hosts."docker.io"]
            mirrors = ["http://ok:5000", "ftp://bad"]
            "#,
        )
        .unwrap();
        let e = c.validate().unwrap_err();
        assert!(e.starts_with(r#"hosts."docker.io".mirrors[1]: "#), "{e}");
        for (bad_mirror, why) in [
            ("https://m.example/v2/prefix", "paths"),
            ("http://:5000", "host"),
            ("http://m.example:99999", "port"),
            ("http://user@m.example", "user info"),
            ("https://", "empty"),
        ] {
            let e = parse_mirror(bad_mirror).unwrap_err();
            assert!(e.contains(why), "{bad_mirror}: {e}");
        }
        let mut c = RegistriesConfig::default();
        c.hosts
            .insert("https://docker.io".into(), RegistryHost::default());
        assert!(c.validate().unwrap_err().contains("write the host alone"));
        assert!(check_host_port("[::1]:5000").is_ok());
        assert!(check_host_port("localhost").is_ok());
        assert!(check_host_port("a b").is_err());
    }
}
