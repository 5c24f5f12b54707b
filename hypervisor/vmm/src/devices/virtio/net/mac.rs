//! Ethernet MAC addresses: parsing, printing, and the stable address a tap name gets
//! when the configuration names none.

use std::fmt;
use std::str::FromStr;

/// A 48-bit Ethernet address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct MacAddr(pub [u8; 6]);

/// Why a string is not a MAC address.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{0:?} is not a MAC address (six hex octets separated by ':')")]
pub struct ParseMacError(String);

impl MacAddr {
    /// The octets.
    pub fn octets(&self) -> [u8; 6] {
        self.0
    }

    /// A group (multicast or broadcast) address: never a station's own.
    pub fn is_multicast(&self) -> bool {
        self.0[0] & 1 != 0
    }

    /// A locally administered unicast address derived from `name` (the tap interface),
    /// the same on every run: FNV-1a over the name, the first octet's I/G bit cleared
    /// and U/L bit set.
    pub fn derived_from(name: &str) -> MacAddr {
        const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
        const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;
        let hash = name.bytes().fold(FNV_OFFSET, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(FNV_PRIME)
        });
        let b = hash.to_be_bytes();
        MacAddr([(b[0] & 0xfe) | 0x02, b[1], b[2], b[3], b[4], b[5]])
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x}")
    }
}

impl FromStr for MacAddr {
    type Err = ParseMacError;

    fn from_str(s: &str) -> Result<MacAddr, ParseMacError> {
        let bad = || ParseMacError(s.to_owned());
        let mut octets = [0u8; 6];
        let mut parts = s.split(':');
        for octet in &mut octets {
            let part = parts.next().ok_or_else(bad)?;
            if part.len() != 2 || !part.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(bad());
            }
            *octet = u8::from_str_radix(part, 16).map_err(|_| bad())?;
        }
        match parts.next() {
            Some(_) => Err(bad()),
            None => Ok(MacAddr(octets)),
        }
    }
}

impl serde::Serialize for MacAddr {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for MacAddr {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<MacAddr, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints() {
        let mac: MacAddr = "02:AB:cd:00:01:ff".parse().unwrap();
        assert_eq!(mac.octets(), [0x02, 0xab, 0xcd, 0x00, 0x01, 0xff]);
        assert_eq!(mac.to_string(), "02:ab:cd:00:01:ff");
        for bad in [
            "",
            "02:ab:cd:00:01",
            "02:ab:cd:00:01:ff:00",
            "2:ab:cd:00:01:ff",
            "02:ab:cd:00:01:fg",
            "02-ab-cd-00-01-ff",
            "+2:ab:cd:00:01:ff",
        ] {
            assert!(bad.parse::<MacAddr>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn derived_addresses_are_stable_local_unicast() {
        let a = MacAddr::derived_from("tap0");
        assert_eq!(a, MacAddr::derived_from("tap0"));
        assert_ne!(a, MacAddr::derived_from("tap1"));
        for name in ["tap0", "tap1", "", "a-much-longer1"] {
            let m = MacAddr::derived_from(name);
            assert!(!m.is_multicast(), "{m}");
            assert_eq!(m.octets()[0] & 0x02, 0x02, "{m} is locally administered");
        }
        // FNV-1a of "tap0" is fixed: the address must not change between releases.
        assert_eq!(a.to_string(), "da:63:fc:ef:07:ac");
    }

    #[test]
    fn serde_uses_the_text_form() {
        let mac = MacAddr([2, 0, 0, 0, 0, 1]);
        let json = serde_json::to_string(&mac).unwrap();
        assert_eq!(json, "\"02:00:00:00:00:01\"");
        assert_eq!(serde_json::from_str::<MacAddr>(&json).unwrap(), mac);
        assert!(serde_json::from_str::<MacAddr>("\"nope\"").is_err());
    }
}
