//! The `key=value[,key=value…]` lists of the repeatable device flags (`--net`, …),
//! parsed into their specs. Errors name the flag and the key.

use std::fmt::Display;
use std::str::FromStr;

use cocoon_vmm::NetSpec;

/// A flag's value split into its `key=value` pairs: every key known, none twice.
pub struct KeyValues<'a> {
    flag: &'static str,
    pairs: Vec<(&'a str, &'a str)>,
}

impl<'a> KeyValues<'a> {
    /// Splits `value` (of `--<flag>`) at commas; each part is `key=value` with a key
    /// from `keys`.
    pub fn parse(flag: &'static str, value: &'a str, keys: &[&str]) -> Result<Self, String> {
        let mut pairs: Vec<(&str, &str)> = Vec::new();
        for part in value.split(',') {
            let Some((key, v)) = part.split_once('=') else {
                return Err(format!("--{flag}: {part:?} is not key=value"));
            };
            if !keys.contains(&key) {
                let known = keys.join(", ");
                return Err(format!("--{flag}: unknown key {key:?} (known: {known})"));
            }
            if pairs.iter().any(|(k, _)| *k == key) {
                return Err(format!("--{flag}: {key} given twice"));
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
    pub fn required(&self, key: &str) -> Result<&'a str, String> {
        match self.get(key) {
            Some(v) if !v.is_empty() => Ok(v),
            _ => Err(format!("--{}: {key}=… is required", self.flag)),
        }
    }

    /// The value of `key` parsed, if given.
    pub fn parsed<T>(&self, key: &str) -> Result<Option<T>, String>
    where
        T: FromStr,
        T::Err: Display,
    {
        self.get(key)
            .map(|v| {
                v.parse()
                    .map_err(|e| format!("--{}: {key}: {e}", self.flag))
            })
            .transpose()
    }
}

/// `--net tap=<ifname>[,mac=<aa:bb:cc:dd:ee:ff>]`.
pub fn parse_net(value: &str) -> Result<NetSpec, String> {
    let kv = KeyValues::parse("net", value, &["tap", "mac"])?;
    let spec = NetSpec {
        tap: kv.required("tap")?.to_owned(),
        mac: kv.parsed("mac")?,
    };
    spec.validate().map_err(|e| format!("--net: {e}"))?;
    Ok(spec)
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
            ("tap=a,mac=zz", "--net: mac: \"zz\" is not a MAC address"),
            (
                "tap=a,mac=01:00:00:00:00:00",
                "--net: mac: 01:00:00:00:00:00 is a multicast",
            ),
            (
                "tap=this-name-is-too-long",
                "--net: tap: \"this-name-is-too-long\"",
            ),
        ] {
            let err = parse_net(bad).unwrap_err();
            assert!(err.starts_with(says), "{bad:?}: {err}");
        }
    }
}
