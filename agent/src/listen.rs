//! Where the agent listens: `vsock:<port>` in a guest, `unix:<path>` as a host process.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListenAddr {
    Vsock { port: u32 },
    Unix { path: PathBuf },
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ListenAddrError {
    #[error("listen address {0:?} must be vsock:<port> or unix:<path>")]
    Scheme(String),
    #[error("vsock port {0:?} is not a number in 1..=4294967294")]
    Port(String),
    #[error("unix socket path is empty")]
    EmptyPath,
}

impl FromStr for ListenAddr {
    type Err = ListenAddrError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Some(port) = s.strip_prefix("vsock:") {
            let port: u32 = port
                .parse()
                .map_err(|_| ListenAddrError::Port(port.into()))?;
            // 0xFFFF_FFFF is VMADDR_PORT_ANY.
            if port == 0 || port == u32::MAX {
                return Err(ListenAddrError::Port(port.to_string()));
            }
            Ok(Self::Vsock { port })
        } else if let Some(path) = s.strip_prefix("unix:") {
            if path.is_empty() {
                return Err(ListenAddrError::EmptyPath);
            }
            Ok(Self::Unix { path: path.into() })
        } else {
            Err(ListenAddrError::Scheme(s.into()))
        }
    }
}

impl fmt::Display for ListenAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Vsock { port } => write!(f, "vsock:{port}"),
            Self::Unix { path } => write!(f, "unix:{}", path.display()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_both_schemes() {
        assert_eq!(
            "vsock:1024".parse::<ListenAddr>().unwrap(),
            ListenAddr::Vsock { port: 1024 }
        );
        assert_eq!(
            "unix:/run/a.sock".parse::<ListenAddr>().unwrap(),
            ListenAddr::Unix {
                path: "/run/a.sock".into()
            }
        );
    }

    #[test]
    fn rejects_garbage() {
        assert!(matches!(
            "tcp:1".parse::<ListenAddr>(),
            Err(ListenAddrError::Scheme(_))
        ));
        assert!(matches!(
            "vsock:x".parse::<ListenAddr>(),
            Err(ListenAddrError::Port(_))
        ));
        assert!(matches!(
            "vsock:0".parse::<ListenAddr>(),
            Err(ListenAddrError::Port(_))
        ));
        assert_eq!(
            "unix:".parse::<ListenAddr>(),
            Err(ListenAddrError::EmptyPath)
        );
    }
}
