//! `key=value,…` option lists of the repeatable device flags (`--drive`, `--net`,
//! `--shared-fs`), parsed by
//! one small shared parser whose errors name the flag and the key.

use cocoon_vmm::{DriveSpec, NetSpec, SharedFsSpec};

/// A malformed option list.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CliError {
    #[error("--{flag}: {item:?} is not key=value")]
    NotKeyValue { flag: &'static str, item: String },
    #[error("--{flag}: unknown key {key:?} (known: {known})")]
    UnknownKey {
        flag: &'static str,
        key: String,
        known: String,
    },
    #[error("--{flag}: {key} given twice")]
    Duplicate { flag: &'static str, key: String },
    #[error("--{flag}: {key}=… is required")]
    Missing {
        flag: &'static str,
        key: &'static str,
    },
    #[error("--{flag}: {key}={value:?}: {why}")]
    BadValue {
        flag: &'static str,
        key: &'static str,
        value: String,
        why: String,
    },
    #[error("--{flag}: {source}")]
    Invalid {
        flag: &'static str,
        #[source]
        source: cocoon_vmm::config::NetSpecError,
    },
}

/// The pairs of one flag's value, each key at most once and known to the flag.
pub struct KeyValues<'a> {
    flag: &'static str,
    pairs: Vec<(&'a str, &'a str)>,
}

impl<'a> KeyValues<'a> {
    /// Splits `value` at commas into `key=value` pairs with keys from `known`.
    pub fn parse(
        flag: &'static str,
        value: &'a str,
        known: &[&str],
    ) -> Result<KeyValues<'a>, CliError> {
        let mut pairs: Vec<(&str, &str)> = Vec::new();
        for item in value.split(',') {
            let Some((key, v)) = item.split_once('=') else {
                return Err(CliError::NotKeyValue {
                    flag,
                    item: item.into(),
                });
            };
            if !known.contains(&key) {
                return Err(CliError::UnknownKey {
                    flag,
                    key: key.into(),
                    known: known.join(", "),
                });
            }
            if pairs.iter().any(|(k, _)| *k == key) {
                return Err(CliError::Duplicate {
                    flag,
                    key: key.into(),
                });
            }
            pairs.push((key, v));
        }
        Ok(KeyValues { flag, pairs })
    }

    /// The value of `key`, if given.
    pub fn get(&self, key: &str) -> Option<&'a str> {
        self.pairs.iter().find(|(k, _)| *k == key).map(|(_, v)| *v)
    }

    /// The value of `key`, which must be given and not empty.
    pub fn required(&self, key: &'static str) -> Result<&'a str, CliError> {
        match self.get(key) {
            Some(v) if !v.is_empty() => Ok(v),
            _ => Err(CliError::Missing {
                flag: self.flag,
                key,
            }),
        }
    }

    /// `on`/`off` (or `true`/`false`) for `key`; `default` when not given.
    pub fn switch(&self, key: &'static str, default: bool) -> Result<bool, CliError> {
        match self.get(key) {
            None => Ok(default),
            Some("on" | "true") => Ok(true),
            Some("off" | "false") => Ok(false),
            Some(other) => Err(CliError::BadValue {
                flag: self.flag,
                key,
                value: other.into(),
                why: "expected on or off".into(),
            }),
        }
    }
}

/// `--drive path=<file>[,read_only=on][,id=<serial>]`.
pub fn parse_drive(value: &str) -> Result<DriveSpec, CliError> {
    let kv = KeyValues::parse("drive", value, &["path", "read_only", "id"])?;
    Ok(DriveSpec {
        path: kv.required("path")?.into(),
        read_only: kv.switch("read_only", false)?,
        id: kv.get("id").map(str::to_owned),
    })
}

/// `--net tap=<ifname>[,mac=<aa:bb:cc:dd:ee:ff>]`.
pub fn parse_net(value: &str) -> Result<NetSpec, CliError> {
    let kv = KeyValues::parse("net", value, &["tap", "mac"])?;
    let mac = kv
        .get("mac")
        .map(|m| {
            m.parse()
                .map_err(|e: cocoon_vmm::devices::virtio::net::mac::ParseMacError| {
                    CliError::BadValue {
                        flag: "net",
                        key: "mac",
                        value: m.into(),
                        why: e.to_string(),
                    }
                })
        })
        .transpose()?;
    let spec = NetSpec {
        tap: kv.required("tap")?.to_owned(),
        mac,
    };
    spec.validate().map_err(|source| CliError::Invalid {
        flag: "net",
        source,
    })?;
    Ok(spec)
}

/// `--shared-fs socket=<vhost-user socket>,tag=<tag>`.
pub fn parse_shared_fs(value: &str) -> Result<SharedFsSpec, CliError> {
    let kv = KeyValues::parse("shared-fs", value, &["socket", "tag"])?;
    let socket = kv.required("socket")?;
    let tag = kv.required("tag")?;
    cocoon_vmm::devices::virtio::fs::check_tag(tag).map_err(|why| CliError::BadValue {
        flag: "shared-fs",
        key: "tag",
        value: tag.into(),
        why: why.to_string(),
    })?;
    Ok(SharedFsSpec {
        socket_path: socket.into(),
        tag: tag.into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn net_flags() {
        let spec = parse_net("tap=tap0").unwrap();
        assert_eq!((spec.tap.as_str(), spec.mac), ("tap0", None));
        let spec = parse_net("mac=02:00:00:00:00:07,tap=vm1").unwrap();
        assert_eq!(spec.tap, "vm1");
        assert_eq!(spec.mac.unwrap().to_string(), "02:00:00:00:00:07");
        for (bad, says) in [
            ("", "--net: \"\" is not key=value"),
            ("tap", "--net: \"tap\" is not key=value"),
            ("mac=02:00:00:00:00:07", "--net: tap=… is required"),
            ("tap=", "--net: tap=… is required"),
            ("tap=a,tap=b", "--net: tap given twice"),
            (
                "tap=a,mtu=9000",
                "--net: unknown key \"mtu\" (known: tap, mac)",
            ),
            ("tap=a,mac=zz", "--net: mac=\"zz\": "),
            (
                "tap=a,mac=01:00:00:00:00:00",
                "--net: mac: 01:00:00:00:00:00 is a multicast",
            ),
            (
                "tap=this-name-is-too-long",
                "--net: tap: \"this-name-is-too-long\"",
            ),
        ] {
            let err = parse_net(bad).unwrap_err().to_string();
            assert!(err.starts_with(says), "{bad:?}: {err}");
        }
    }

    #[test]
    fn shared_fs_is_parsed_and_checked() {
        assert_eq!(
            parse_shared_fs("tag=rootfs,socket=/run/fs=1.sock").unwrap(),
            SharedFsSpec {
                socket_path: "/run/fs=1.sock".into(),
                tag: "rootfs".into(),
            }
        );
        let err = |s: &str| parse_shared_fs(s).unwrap_err().to_string();
        assert_eq!(err("socket=/s"), "--shared-fs: tag=… is required");
        assert_eq!(err("socket=,tag=t"), "--shared-fs: socket=… is required");
        assert_eq!(
            err("socket=/s,tag=t,cache=auto"),
            "--shared-fs: unknown key \"cache\" (known: socket, tag)"
        );
        assert_eq!(err("socket=/s,tag=t,tag=u"), "--shared-fs: tag given twice");
        assert_eq!(
            err("socket=/s,rootfs"),
            "--shared-fs: \"rootfs\" is not key=value"
        );
        let long = format!("socket=/s,tag={}", "x".repeat(37));
        assert!(
            err(&long).starts_with("--shared-fs: tag=\"xxx"),
            "{}",
            err(&long)
        );
    }

    #[test]
    fn drives_parse_with_defaults() {
        assert_eq!(
            parse_drive("path=/var/d.img").unwrap(),
            DriveSpec {
                path: "/var/d.img".into(),
                read_only: false,
                id: None
            }
        );
        assert_eq!(
            parse_drive("id=root,read_only=on,path=d.img").unwrap(),
            DriveSpec {
                path: "d.img".into(),
                read_only: true,
                id: Some("root".into())
            }
        );
        assert!(!parse_drive("path=x,read_only=off").unwrap().read_only);
    }

    #[test]
    fn errors_name_the_flag_and_key() {
        let err = |s: &str| parse_drive(s).unwrap_err().to_string();
        assert_eq!(err("read_only=on"), "--drive: path=… is required");
        assert_eq!(err("path="), "--drive: path=… is required");
        assert_eq!(
            err("path=a,ro=on"),
            "--drive: unknown key \"ro\" (known: path, read_only, id)"
        );
        assert_eq!(err("path=a,path=b"), "--drive: path given twice");
        assert_eq!(err("path=a,,id=x"), "--drive: \"\" is not key=value");
        assert_eq!(
            err("path=a,read_only=yes"),
            "--drive: read_only=\"yes\": expected on or off"
        );
    }
}
