//! Parsers for option values: sizes, CPUs, volumes, variables, durations, names.
//!
//! Each returns a message clap shows after "invalid value '…' for '--option':".

use std::path::PathBuf;
use std::time::Duration;

/// The CFS period CPU limits are expressed in, in microseconds (kubelet's).
pub const CPU_PERIOD_US: i64 = 100_000;

/// `--memory`: bytes, from a Kubernetes quantity (`256Mi`, `1.5Gi`, `500M`, `1048576`).
pub fn memory(value: &str) -> Result<i64, String> {
    let split = value
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(value.len());
    let (number, suffix) = value.split_at(split);
    let multiplier: u64 = match suffix {
        "" => 1,
        "k" | "K" => 1000,
        "M" => 1000_u64.pow(2),
        "G" => 1000_u64.pow(3),
        "T" => 1000_u64.pow(4),
        "Ki" => 1 << 10,
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        "Ti" => 1 << 40,
        "m" | "g" | "mb" | "MB" | "gb" | "GB" => {
            return Err(format!(
                "unknown unit {suffix:?}: use Mi or Gi (powers of 1024) or M or G (of 1000)"
            ))
        }
        _ => {
            return Err(format!(
                "unknown unit {suffix:?}: use Ki, Mi, Gi, Ti, k, M, G or T"
            ))
        }
    };
    let bytes = decimal(number, multiplier)
        .ok_or_else(|| format!("{value:?} is not a size such as 256Mi or 1.5Gi"))?;
    if bytes == 0 {
        return Err("the limit must be more than 0 bytes".into());
    }
    i64::try_from(bytes).map_err(|_| format!("{value} is too large"))
}

/// `number × multiplier` for a decimal with at most nine fractional digits, rounded down.
fn decimal(number: &str, multiplier: u64) -> Option<u128> {
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    if whole.is_empty() && fraction.is_empty() || fraction.len() > 9 {
        return None;
    }
    let all_digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if !all_digits(whole) || !all_digits(fraction) || fraction.contains('.') {
        return None;
    }
    let whole: u128 = if whole.is_empty() {
        0
    } else {
        whole.parse().ok()?
    };
    let scale = 10_u128.pow(fraction.len() as u32);
    let fraction: u128 = if fraction.is_empty() {
        0
    } else {
        fraction.parse().ok()?
    };
    let scaled = whole.checked_mul(scale)?.checked_add(fraction)?;
    Some(scaled.checked_mul(u128::from(multiplier))? / scale)
}

/// A CPU limit in thousandths of a CPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cpus {
    pub millis: u32,
}

impl Cpus {
    /// The CFS quota in microseconds per [`CPU_PERIOD_US`].
    pub fn quota_us(self) -> i64 {
        i64::from(self.millis) * CPU_PERIOD_US / 1000
    }

    pub fn period_us(self) -> i64 {
        CPU_PERIOD_US
    }
}

/// `--cpus`: `1.5`, `2`, `0.25` or Kubernetes' `250m`.
pub fn cpus(value: &str) -> Result<Cpus, String> {
    let millis = match value.strip_suffix('m') {
        Some(m) if !m.is_empty() && m.bytes().all(|b| b.is_ascii_digit()) => m.parse::<u128>().ok(),
        Some(_) => None,
        None if value.split_once('.').is_some_and(|(_, f)| f.len() > 3) => {
            return Err(format!(
                "{value}: at most three decimals (a thousandth of a CPU)"
            ))
        }
        None => decimal(value, 1000),
    }
    .ok_or_else(|| format!("{value:?} is not a number of CPUs such as 1.5 or 500m"))?;
    if millis < 10 {
        return Err("the limit must be at least 0.01 CPUs".into());
    }
    if millis > 1_024_000 {
        return Err(format!("{value} CPUs is more than any machine has"));
    }
    let millis = u32::try_from(millis).map_err(|_| format!("{value} is too large"))?;
    Ok(Cpus { millis })
}

/// `-v host:container[:ro|rw]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Volume {
    pub host: PathBuf,
    pub container: PathBuf,
    pub readonly: bool,
}

pub fn volume(value: &str) -> Result<Volume, String> {
    let parts: Vec<&str> = value.split(':').collect();
    let (host, container, mode) = match parts[..] {
        [host, container] => (host, container, None),
        [host, container, mode] => (host, container, Some(mode)),
        _ => return Err("expected HOST:CONTAINER or HOST:CONTAINER:ro".into()),
    };
    let readonly = match mode {
        None | Some("rw") => false,
        Some("ro") => true,
        Some(other) => return Err(format!("unknown mode {other:?}: use ro or rw")),
    };
    for (which, path) in [("host", host), ("container", container)] {
        if !path.starts_with('/') {
            return Err(format!("the {which} path {path:?} must be absolute"));
        }
    }
    Ok(Volume {
        host: host.into(),
        container: container.into(),
        readonly,
    })
}

/// `--env KEY=VALUE`, or `--env KEY` to pass this shell's value on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvVar {
    pub key: String,
    pub value: Option<String>,
}

pub fn env(value: &str) -> Result<EnvVar, String> {
    let (key, value) = match value.split_once('=') {
        Some((key, value)) => (key, Some(value.to_string())),
        None => (value, None),
    };
    if key.is_empty() {
        return Err("the variable needs a name: KEY=VALUE".into());
    }
    if key.contains('\0') || value.as_deref().is_some_and(|v| v.contains('\0')) {
        return Err("variables cannot hold NUL bytes".into());
    }
    Ok(EnvVar {
        key: key.to_string(),
        value,
    })
}

impl EnvVar {
    /// The value, taken from `lookup` (this process's environment) when none was given; a
    /// variable unset there is left out, as `docker run -e KEY` does.
    pub fn resolve(&self, lookup: impl Fn(&str) -> Option<String>) -> Option<(String, String)> {
        let value = self.value.clone().or_else(|| lookup(&self.key))?;
        Some((self.key.clone(), value))
    }
}

/// A duration: `30s`, `500ms`, `2m`, `1h`, `1m30s`, or plain seconds (`10`).
pub fn duration(value: &str) -> Result<Duration, String> {
    let bad = || format!("{value:?} is not a duration such as 30s, 500ms or 2m");
    if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        return value.parse().map(Duration::from_secs).map_err(|_| bad());
    }
    let mut rest = value;
    let mut total = Duration::ZERO;
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
        let number: u64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let part = match &rest[..unit_len] {
            "ms" => Duration::from_millis(number),
            "s" => Duration::from_secs(number),
            "m" => Duration::from_secs(number.checked_mul(60).ok_or_else(bad)?),
            "h" => Duration::from_secs(number.checked_mul(3600).ok_or_else(bad)?),
            _ => return Err(bad()),
        };
        total = total.checked_add(part).ok_or_else(bad)?;
        rest = &rest[unit_len..];
    }
    if value.is_empty() {
        return Err(bad());
    }
    Ok(total)
}

/// A duration the way [`duration`] reads them.
pub fn format_duration(d: Duration) -> String {
    if d.subsec_millis() != 0 || d.is_zero() {
        format!("{}ms", d.as_millis())
    } else {
        format!("{}s", d.as_secs())
    }
}

/// `--creds user:password` for a registry.
#[derive(Clone, PartialEq, Eq)]
pub struct Creds {
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for Creds {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Creds")
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

pub fn creds(value: &str) -> Result<Creds, String> {
    match value.split_once(':') {
        Some((user, password)) if !user.is_empty() => Ok(Creds {
            username: user.to_string(),
            password: password.to_string(),
        }),
        _ => Err("expected USER:PASSWORD".into()),
    }
}

/// `--name`: a DNS label (lowercase letters, digits and `-`, at most 63), since it becomes
/// the pod's name and hostname.
pub fn name(value: &str) -> Result<String, String> {
    let ok_char = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-';
    let bytes = value.as_bytes();
    if bytes.is_empty() || bytes.len() > 63 {
        return Err("a name has 1 to 63 characters".into());
    }
    if !bytes.iter().all(|&b| ok_char(b)) || bytes[0] == b'-' || bytes[bytes.len() - 1] == b'-' {
        return Err(format!(
            "{value:?}: use lowercase letters, digits and '-', not at either end"
        ));
    }
    Ok(value.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_takes_kubernetes_quantities() {
        assert_eq!(memory("256Mi"), Ok(256 << 20));
        assert_eq!(memory("1.5Gi"), Ok(3 << 29));
        assert_eq!(memory("500M"), Ok(500_000_000));
        assert_eq!(memory("1048576"), Ok(1 << 20));
        assert_eq!(memory("2k"), Ok(2000));
        assert_eq!(memory(".5Ki"), Ok(512));
    }

    #[test]
    fn memory_refuses_nonsense_clearly() {
        assert!(memory("256m").unwrap_err().contains("use Mi or Gi"));
        assert!(memory("12Zi").unwrap_err().contains("unknown unit \"Zi\""));
        assert!(memory("0").unwrap_err().contains("more than 0"));
        assert!(memory("Mi").unwrap_err().contains("not a size"));
        assert!(memory("1.2.3Mi").unwrap_err().contains("not a size"));
        assert!(memory("-1Mi").unwrap_err().contains("unknown unit"));
        assert!(memory("99999999999Ti").unwrap_err().contains("too large"));
        assert!(memory("").is_err());
    }

    #[test]
    fn cpus_become_a_quota_per_period() {
        let c = cpus("1.5").unwrap();
        assert_eq!((c.quota_us(), c.period_us()), (150_000, 100_000));
        assert_eq!(cpus("2").unwrap().quota_us(), 200_000);
        assert_eq!(cpus("250m").unwrap().quota_us(), 25_000);
        assert_eq!(cpus("0.01").unwrap().quota_us(), 1_000);
        assert!(cpus("0.001").unwrap_err().contains("at least 0.01"));
        assert!(cpus("0").unwrap_err().contains("at least 0.01"));
        assert!(cpus("1.2345").unwrap_err().contains("three decimals"));
        assert!(cpus("many").unwrap_err().contains("not a number of CPUs"));
        assert!(cpus("-1").unwrap_err().contains("not a number of CPUs"));
        assert!(cpus("m").is_err());
        assert!(cpus("5000").unwrap_err().contains("more than any machine"));
    }

    #[test]
    fn volumes_are_host_container_and_a_mode() {
        assert_eq!(
            volume("/data:/mnt/data:ro"),
            Ok(Volume {
                host: "/data".into(),
                container: "/mnt/data".into(),
                readonly: true
            })
        );
        assert!(!volume("/a:/b").unwrap().readonly);
        assert!(!volume("/a:/b:rw").unwrap().readonly);
        assert!(volume("/a:/b:rx")
            .unwrap_err()
            .contains("unknown mode \"rx\""));
        assert!(volume("data:/b")
            .unwrap_err()
            .contains("host path \"data\" must be absolute"));
        assert!(volume("/a:b").unwrap_err().contains("container path"));
        assert!(volume("/a").unwrap_err().contains("HOST:CONTAINER"));
        assert!(volume("/a:/b:ro:x").is_err());
    }

    #[test]
    fn env_takes_key_value_or_a_key_to_pass_on() {
        assert_eq!(
            env("A=b=c"),
            Ok(EnvVar {
                key: "A".into(),
                value: Some("b=c".into())
            })
        );
        assert_eq!(env("EMPTY=").unwrap().value.as_deref(), Some(""));
        let pass = env("HOME").unwrap();
        assert_eq!(pass.value, None);
        assert_eq!(
            pass.resolve(|k| (k == "HOME").then(|| "/root".into())),
            Some(("HOME".into(), "/root".into()))
        );
        assert_eq!(pass.resolve(|_| None), None);
        assert!(env("=x").unwrap_err().contains("needs a name"));
    }

    #[test]
    fn durations_take_units() {
        assert_eq!(duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(duration("10"), Ok(Duration::from_secs(10)));
        for bad in ["", "s", "10x", "1.5s", "-1s", "99999999999999999999h"] {
            assert!(
                duration(bad).unwrap_err().contains("not a duration"),
                "{bad}"
            );
        }
        assert_eq!(format_duration(Duration::from_secs(30)), "30s");
        assert_eq!(format_duration(Duration::from_millis(1500)), "1500ms");
    }

    #[test]
    fn creds_split_at_the_first_colon_and_hide_the_password() {
        let c = creds("me:pa:ss").unwrap();
        assert_eq!((c.username.as_str(), c.password.as_str()), ("me", "pa:ss"));
        assert!(!format!("{c:?}").contains("pa:ss"));
        assert!(creds("me").is_err());
        assert!(creds(":pw").is_err());
    }

    #[test]
    fn names_are_dns_labels() {
        assert_eq!(name("web-1"), Ok("web-1".into()));
        assert!(name("Web").is_err());
        assert!(name("-web").is_err());
        assert!(name("a_b").is_err());
        assert!(name("").is_err());
        assert!(name(&"a".repeat(64)).is_err());
    }
}
