//! The CNI error result (SPEC.md, section 5 "Error") and the well-known codes.

use serde_json::{json, Value};

/// Well-known error codes of the CNI spec (plus libcni's 8 and 999) and our plugin-specific ones
/// (100+, allowed by the spec).
pub mod code {
    pub const INCOMPATIBLE_VERSION: u32 = 1;
    pub const UNSUPPORTED_FIELD: u32 = 2;
    pub const CONTAINER_UNKNOWN: u32 = 3;
    pub const INVALID_ENV: u32 = 4;
    pub const IO_FAILURE: u32 = 5;
    pub const DECODE_FAILURE: u32 = 6;
    pub const INVALID_CONFIG: u32 = 7;
    /// libcni's ErrInvalidNetNS: CNI_NETNS exists but is not a network namespace.
    pub const INVALID_NETNS: u32 = 8;
    pub const TRY_AGAIN_LATER: u32 = 11;
    pub const NOT_AVAILABLE: u32 = 50;
    /// Plugin specific: CHECK found the attachment not as ADD left it.
    pub const CHECK_FAILED: u32 = 100;
    /// Plugin specific: an interface of the requested name already exists in the container.
    pub const INTERFACE_EXISTS: u32 = 101;
    /// libcni's ErrInternal (a bug, e.g. a panic).
    pub const INTERNAL: u32 = 999;
}

/// An error as the runtime sees it: printed as JSON on stdout, exit status 1.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{msg} ({details})")]
pub struct CniError {
    pub code: u32,
    pub msg: String,
    pub details: String,
}

impl CniError {
    pub fn new(code: u32, msg: impl Into<String>, details: impl Into<String>) -> Self {
        CniError { code, msg: msg.into(), details: details.into() }
    }

    /// The spec's error object, tagged with the version the runtime asked for.
    pub fn to_json(&self, cni_version: &str) -> Value {
        let mut v = json!({ "cniVersion": cni_version, "code": self.code, "msg": self.msg });
        if !self.details.is_empty() {
            v["details"] = Value::String(self.details.clone());
        }
        v
    }
}

/// Every module error knows its CNI code; `From` turns it into the wire error.
pub trait Coded: std::fmt::Display {
    fn code(&self) -> u32;
    /// Short message; the Display string becomes the details.
    fn msg(&self) -> &'static str;
}

impl<E: Coded> From<E> for CniError {
    fn from(e: E) -> Self {
        CniError::new(e.code(), e.msg(), e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_json_shape() {
        let e = CniError::new(code::INVALID_CONFIG, "invalid network config", "subnet missing");
        assert_eq!(
            e.to_json("1.0.0"),
            json!({"cniVersion":"1.0.0","code":7,"msg":"invalid network config","details":"subnet missing"})
        );
        let e = CniError::new(code::IO_FAILURE, "io", "");
        assert!(e.to_json("0.4.0").get("details").is_none());
    }
}
