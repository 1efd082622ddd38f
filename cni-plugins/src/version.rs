//! Spec versions we speak, and what each allows.

use std::fmt;

/// The versions this plugin supports, oldest first (what VERSION reports).
pub const SUPPORTED: &[&str] = &["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"];

/// The newest version; used to tag errors when the input's version is unknown.
pub const LATEST: &str = "1.1.0";

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum CniVersion {
    V0_3_0,
    V0_3_1,
    V0_4_0,
    V1_0_0,
    V1_1_0,
}

impl CniVersion {
    pub fn parse(s: &str) -> Option<CniVersion> {
        Some(match s {
            "0.3.0" => CniVersion::V0_3_0,
            "0.3.1" => CniVersion::V0_3_1,
            "0.4.0" => CniVersion::V0_4_0,
            "1.0.0" => CniVersion::V1_0_0,
            "1.1.0" => CniVersion::V1_1_0,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            CniVersion::V0_3_0 => "0.3.0",
            CniVersion::V0_3_1 => "0.3.1",
            CniVersion::V0_4_0 => "0.4.0",
            CniVersion::V1_0_0 => "1.0.0",
            CniVersion::V1_1_0 => "1.1.0",
        }
    }

    /// CHECK exists since 0.4.0.
    pub fn allows_check(self) -> bool {
        self >= CniVersion::V0_4_0
    }

    /// GC and STATUS exist since 1.1.0.
    pub fn allows_gc_and_status(self) -> bool {
        self >= CniVersion::V1_1_0
    }

    /// 0.3.x and 0.4.0 results (types/040) carry `"version": "4"|"6"` in each ips entry.
    pub fn ips_have_version(self) -> bool {
        self < CniVersion::V1_0_0
    }

    /// `mtu` in interfaces is a 1.1.0 addition.
    pub fn interfaces_have_mtu(self) -> bool {
        self >= CniVersion::V1_1_0
    }
}

impl fmt::Display for CniVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_roundtrip_and_order() {
        for s in SUPPORTED {
            assert_eq!(CniVersion::parse(s).unwrap().as_str(), *s);
        }
        assert_eq!(CniVersion::parse("0.2.0"), None);
        assert_eq!(CniVersion::parse("1.0"), None);
        assert!(CniVersion::V0_3_1 < CniVersion::V1_0_0);
        assert!(!CniVersion::V0_3_1.allows_check());
        assert!(CniVersion::V0_4_0.allows_check());
        assert!(!CniVersion::V1_0_0.allows_gc_and_status());
        assert!(CniVersion::V1_1_0.allows_gc_and_status());
        assert!(CniVersion::V0_4_0.ips_have_version());
        assert!(!CniVersion::V1_0_0.ips_have_version());
    }
}
