#![no_main]
//! A PATCH body of type application/json-patch+json (RFC 6902).
use berth::controlplane::apiserver::{fuzzing, patch::PatchType};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| fuzzing::patch_body(PatchType::Json, data));
