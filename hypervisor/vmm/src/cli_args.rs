//! `key=value[,key=value…]` device flags (`--shared-fs socket=<path>,tag=<tag>`):
//! parsed here, with errors naming the flag and the key.

use std::collections::BTreeMap;
use std::path::PathBuf;

use cocoon_vmm::SharedFsSpec;

/// Why a flag's value was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CliArgError {
    #[error("--{flag}: {item:?} is not key=value")]
    NotKeyValue { flag: &'static str, item: String },
    #[error("--{flag}: {key} is given twice")]
    Repeated { flag: &'static str, key: String },
    #[error("--{flag}: {key} is missing")]
    Missing {
        flag: &'static str,
        key: &'static str,
    },
    #[error("--{flag}: unknown key {key} (known: {known})")]
    Unknown {
        flag: &'static str,
        key: String,
        known: String,
    },
    #[error("--{flag}: {key}: {why}")]
    Invalid {
        flag: &'static str,
        key: &'static str,
        why: String,
    },
}

/// The pairs of one flag's value.
pub struct KeyValues {
    flag: &'static str,
    pairs: BTreeMap<String, String>,
}

impl KeyValues {
    /// Splits `value` at commas into `key=value` pairs (values may contain `=`, not
    /// commas); a key may come once.
    pub fn parse(flag: &'static str, value: &str) -> Result<KeyValues, CliArgError> {
        let mut pairs = BTreeMap::new();
        for item in value.split(',') {
            let Some((key, v)) = item.split_once('=').filter(|(k, _)| !k.is_empty()) else {
                return Err(CliArgError::NotKeyValue {
                    flag,
                    item: item.to_owned(),
                });
            };
            if pairs.insert(key.to_owned(), v.to_owned()).is_some() {
                return Err(CliArgError::Repeated {
                    flag,
                    key: key.to_owned(),
                });
            }
        }
        Ok(KeyValues { flag, pairs })
    }

    /// Takes `key`'s value.
    pub fn take(&mut self, key: &str) -> Option<String> {
        self.pairs.remove(key)
    }

    /// Takes `key`'s value, which must be there.
    pub fn required(&mut self, key: &'static str) -> Result<String, CliArgError> {
        self.take(key).ok_or(CliArgError::Missing {
            flag: self.flag,
            key,
        })
    }

    /// Refuses any key not taken; `known` lists the flag's keys for the message.
    pub fn finish(self, known: &[&str]) -> Result<(), CliArgError> {
        match self.pairs.into_keys().next() {
            None => Ok(()),
            Some(key) => Err(CliArgError::Unknown {
                flag: self.flag,
                key,
                known: known.join(", "),
            }),
        }
    }
}

/// `--shared-fs socket=<vhost-user socket>,tag=<tag>`.
pub fn shared_fs(value: &str) -> Result<SharedFsSpec, CliArgError> {
    const FLAG: &str = "shared-fs";
    let mut kv = KeyValues::parse(FLAG, value)?;
    let socket = kv.required("socket")?;
    let tag = kv.required("tag")?;
    kv.finish(&["socket", "tag"])?;
    if socket.is_empty() {
        return Err(CliArgError::Invalid {
            flag: FLAG,
            key: "socket",
            why: "empty".into(),
        });
    }
    cocoon_vmm::devices::virtio::fs::check_tag(&tag).map_err(|why| CliArgError::Invalid {
        flag: FLAG,
        key: "tag",
        why: why.into(),
    })?;
    Ok(SharedFsSpec {
        socket_path: PathBuf::from(socket),
        tag,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_fs_is_parsed_and_checked() {
        assert_eq!(
            shared_fs("tag=rootfs,socket=/run/fs=1.sock"),
            Ok(SharedFsSpec {
                socket_path: "/run/fs=1.sock".into(),
                tag: "rootfs".into(),
            })
        );
        assert_eq!(
            shared_fs("socket=/s"),
            Err(CliArgError::Missing {
                flag: "shared-fs",
                key: "tag"
            })
        );
        let err = shared_fs("socket=/s,tag=t,cache=auto").unwrap_err();
        assert_eq!(
            err.to_string(),
            "--shared-fs: unknown key cache (known: socket, tag)"
        );
        assert!(matches!(
            shared_fs("socket=/s,tag=t,tag=u"),
            Err(CliArgError::Repeated { .. })
        ));
        assert!(matches!(
            shared_fs("socket=/s,rootfs"),
            Err(CliArgError::NotKeyValue { .. })
        ));
        assert!(matches!(
            shared_fs("socket=/s,=x"),
            Err(CliArgError::NotKeyValue { .. })
        ));
        let long = format!("socket=/s,tag={}", "x".repeat(37));
        assert!(matches!(
            shared_fs(&long),
            Err(CliArgError::Invalid { key: "tag", .. })
        ));
        assert!(matches!(
            shared_fs("socket=,tag=t"),
            Err(CliArgError::Invalid { key: "socket", .. })
        ));
    }
}
