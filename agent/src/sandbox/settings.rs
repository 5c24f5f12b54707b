//! CreateSandbox's settings, validated: namespaces, sysctls, DNS, hostname.

use super::Shared;
use crate::error::{AgentError, Result};
use cocoon_proto::agent::v1::{DnsConfig, Namespace};
use std::net::IpAddr;

/// The namespaces to share; none given → network, IPC and UTS (Kubernetes' pod).
pub fn shared(requested: &[i32]) -> Result<Shared> {
    if requested.is_empty() {
        return Ok(Shared {
            network: true,
            ipc: true,
            uts: true,
            pid: false,
        });
    }
    let mut s = Shared::default();
    for (i, &n) in requested.iter().enumerate() {
        match Namespace::try_from(n) {
            Ok(Namespace::Network) => s.network = true,
            Ok(Namespace::Ipc) => s.ipc = true,
            Ok(Namespace::Uts) => s.uts = true,
            Ok(Namespace::Pid) => s.pid = true,
            _ => {
                return Err(AgentError::invalid(
                    format!("shared_namespaces[{i}]"),
                    format!("unknown namespace {n}"),
                ))
            }
        }
    }
    Ok(s)
}

/// Sysctls a pod may set: those the kernel keeps per network or IPC namespace, and only
/// when the pod has that namespace of its own.
pub fn sysctls(
    requested: &std::collections::HashMap<String, String>,
    shared: Shared,
) -> Result<Vec<(String, String)>> {
    let mut out: Vec<(String, String)> = Vec::new();
    for (key, value) in requested {
        let field = format!("sysctls[{key}]");
        let well_formed = !key.is_empty()
            && key
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
            && !key.contains("..")
            && !key.starts_with('.');
        if !well_formed {
            return Err(AgentError::invalid(field, "not a sysctl name"));
        }
        let ipc = ["kernel.shm", "kernel.msg", "fs.mqueue."]
            .iter()
            .any(|p| key.starts_with(p))
            || key == "kernel.sem";
        let net = key.starts_with("net.");
        let allowed = (net && shared.network) || (ipc && shared.ipc);
        if !allowed {
            return Err(AgentError::invalid(
                field,
                "only sysctls of the pod's own network or IPC namespace may be set",
            ));
        }
        if value.contains('\n') || value.is_empty() {
            return Err(AgentError::invalid(field, "bad value"));
        }
        out.push((key.clone(), value.clone()));
    }
    out.sort();
    Ok(out)
}

pub fn hostname(name: &str) -> Result<Option<String>> {
    if name.is_empty() {
        return Ok(None);
    }
    let ok = name.len() <= 64
        && name
            .split('.')
            .all(|l| !l.is_empty() && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'));
    if !ok {
        return Err(AgentError::invalid(
            "hostname",
            format!("{name:?} is not a host name"),
        ));
    }
    Ok(Some(name.to_string()))
}

/// resolv.conf text, or `None` when no DNS was given (containers then keep the image's).
pub fn resolv_conf(dns: Option<&DnsConfig>) -> Result<Option<String>> {
    let Some(dns) = dns else { return Ok(None) };
    if dns.servers.is_empty() && dns.searches.is_empty() && dns.options.is_empty() {
        return Ok(None);
    }
    let mut text = String::new();
    for (i, s) in dns.servers.iter().enumerate() {
        let ip: IpAddr = s.parse().map_err(|_| {
            AgentError::invalid(
                format!("dns.servers[{i}]"),
                format!("{s:?} is not an IP address"),
            )
        })?;
        text.push_str(&format!("nameserver {ip}\n"));
    }
    let word = |field: String, w: &String| {
        if w.is_empty() || w.chars().any(|c| c.is_whitespace() || c.is_control()) {
            Err(AgentError::invalid(
                field,
                format!("{w:?} is not a single word"),
            ))
        } else {
            Ok(())
        }
    };
    for (i, s) in dns.searches.iter().enumerate() {
        word(format!("dns.searches[{i}]"), s)?;
    }
    for (i, o) in dns.options.iter().enumerate() {
        word(format!("dns.options[{i}]"), o)?;
    }
    if !dns.searches.is_empty() {
        text.push_str(&format!("search {}\n", dns.searches.join(" ")));
    }
    if !dns.options.is_empty() {
        text.push_str(&format!("options {}\n", dns.options.join(" ")));
    }
    Ok(Some(text))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn default_share_is_a_kubernetes_pod() {
        let s = shared(&[]).unwrap();
        assert!(s.network && s.ipc && s.uts && !s.pid);
        let s = shared(&[Namespace::Pid as i32, Namespace::Network as i32]).unwrap();
        assert!(s.pid && s.network && !s.ipc);
        let e = shared(&[0]).unwrap_err().to_string();
        assert!(e.starts_with("shared_namespaces[0]"), "{e}");
    }

    #[test]
    fn only_namespaced_sysctls() {
        let s = shared(&[]).unwrap();
        let ok = HashMap::from([(
            "net.ipv4.ip_unprivileged_port_start".to_string(),
            "0".to_string(),
        )]);
        assert_eq!(sysctls(&ok, s).unwrap().len(), 1);
        for bad in ["vm.swappiness", "kernel.panic", "../x", "net..a"] {
            let m = HashMap::from([(bad.to_string(), "1".to_string())]);
            assert!(sysctls(&m, s).is_err(), "{bad}");
        }
        let no_net = Shared {
            ipc: true,
            ..Default::default()
        };
        assert!(
            sysctls(&ok, no_net).is_err(),
            "net sysctl without a network namespace"
        );
    }

    #[test]
    fn dns_renders_resolv_conf() {
        let dns = DnsConfig {
            servers: vec!["10.0.0.10".into()],
            searches: vec!["svc.cluster.local".into()],
            options: vec!["ndots:5".into()],
        };
        assert_eq!(
            resolv_conf(Some(&dns)).unwrap().unwrap(),
            "nameserver 10.0.0.10\nsearch svc.cluster.local\noptions ndots:5\n"
        );
        let bad = DnsConfig {
            servers: vec!["x".into()],
            ..Default::default()
        };
        assert!(resolv_conf(Some(&bad))
            .unwrap_err()
            .to_string()
            .starts_with("dns.servers[0]"));
        assert!(resolv_conf(None).unwrap().is_none());
    }

    #[test]
    fn hostnames() {
        assert_eq!(hostname("web-0").unwrap().as_deref(), Some("web-0"));
        assert!(hostname("").unwrap().is_none());
        assert!(hostname("a b").is_err());
    }
}
