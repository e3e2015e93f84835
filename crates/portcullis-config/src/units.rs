//! Human-written quantities in the config: durations (`250ms`, `30s`, `5m`, `24h`)
//! and byte sizes (`32KiB`, `1MiB`, or a plain number of bytes).

use serde::Deserialize;
use std::fmt;

/// A duration written `250ms`, `30s`, `5m`, `24h` (or `1h30m`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Duration(pub std::time::Duration);

impl Duration {
    /// A duration of `secs` seconds.
    pub const fn from_secs(secs: u64) -> Self {
        Duration(std::time::Duration::from_secs(secs))
    }

    /// A duration of `ms` milliseconds.
    pub const fn from_millis(ms: u64) -> Self {
        Duration(std::time::Duration::from_millis(ms))
    }

    /// The std duration.
    pub const fn get(self) -> std::time::Duration {
        self.0
    }

    /// Parses `250ms`, `30s`, `5m`, `24h`, `1h30m`. A bare number is refused: the unit
    /// is what makes a config readable.
    pub fn parse(text: &str) -> Result<Self, String> {
        let err = || format!("invalid duration `{text}`: write it like 250ms, 30s, 5m or 24h");
        let s = text.trim();
        if s.is_empty() {
            return Err(err());
        }
        let mut total_ms: u128 = 0;
        let mut rest = s;
        while !rest.is_empty() {
            let digits = rest.find(|c: char| !c.is_ascii_digit()).ok_or_else(err)?;
            if digits == 0 {
                return Err(err());
            }
            let n: u128 = rest[..digits].parse().map_err(|_| err())?;
            rest = &rest[digits..];
            let unit_len = rest
                .find(|c: char| c.is_ascii_digit())
                .unwrap_or(rest.len());
            let factor: u128 = match &rest[..unit_len] {
                "ms" => 1,
                "s" => 1_000,
                "m" => 60_000,
                "h" => 3_600_000,
                "d" => 86_400_000,
                _ => return Err(err()),
            };
            total_ms = n
                .checked_mul(factor)
                .and_then(|v| total_ms.checked_add(v))
                .ok_or_else(err)?;
            rest = &rest[unit_len..];
        }
        let ms = u64::try_from(total_ms).map_err(|_| err())?;
        Ok(Duration::from_millis(ms))
    }
}

impl fmt::Display for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.0.as_millis();
        if ms.is_multiple_of(3_600_000) && ms > 0 {
            write!(f, "{}h", ms / 3_600_000)
        } else if ms.is_multiple_of(60_000) && ms > 0 {
            write!(f, "{}m", ms / 60_000)
        } else if ms.is_multiple_of(1_000) {
            write!(f, "{}s", ms / 1_000)
        } else {
            write!(f, "{ms}ms")
        }
    }
}

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Duration::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// A size in bytes, written as a number or with a unit: `512`, `64KiB`, `1MiB`, `32KB`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ByteSize(pub u64);

impl ByteSize {
    /// Parses `512`, `64KiB`, `1MiB`, `32KB` (KB and KiB both mean 1024: nobody sizes
    /// header buffers in powers of ten).
    pub fn parse(text: &str) -> Result<Self, String> {
        let err = || format!("invalid size `{text}`: write it like 32KiB, 1MiB or 4096");
        let s = text.trim();
        let digits = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
        if digits == 0 {
            return Err(err());
        }
        let n: u64 = s[..digits].parse().map_err(|_| err())?;
        let factor: u64 = match s[digits..].trim() {
            "" | "B" => 1,
            "KiB" | "KB" | "K" | "k" => 1024,
            "MiB" | "MB" | "M" => 1024 * 1024,
            "GiB" | "GB" | "G" => 1024 * 1024 * 1024,
            _ => return Err(err()),
        };
        n.checked_mul(factor).map(ByteSize).ok_or_else(err)
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Num(u64),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Num(n) => Ok(ByteSize(n)),
            Raw::Text(s) => ByteSize::parse(&s).map_err(serde::de::Error::custom),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(Duration::parse("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(Duration::parse("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(Duration::parse("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(Duration::parse("24h"), Ok(Duration::from_secs(86_400)));
        assert_eq!(Duration::parse("1h30m"), Ok(Duration::from_secs(5_400)));
        for bad in [
            "",
            "30",
            "s",
            "5 m",
            "-1s",
            "1.5s",
            "99999999999999999999999h",
        ] {
            assert!(Duration::parse(bad).is_err(), "{bad} should be refused");
        }
        assert_eq!(Duration::from_secs(300).to_string(), "5m");
    }

    #[test]
    fn sizes() {
        assert_eq!(ByteSize::parse("32KiB"), Ok(ByteSize(32 * 1024)));
        assert_eq!(ByteSize::parse("4096"), Ok(ByteSize(4096)));
        assert_eq!(ByteSize::parse("1MiB"), Ok(ByteSize(1 << 20)));
        assert!(ByteSize::parse("lots").is_err());
        assert!(ByteSize::parse("99999999999999999999GiB").is_err());
    }
}
