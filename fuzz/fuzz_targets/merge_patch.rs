#![no_main]
//! A PATCH body of type application/merge-patch+json (RFC 7386).
use berth::controlplane::apiserver::{fuzzing, patch::PatchType};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| fuzzing::patch_body(PatchType::Merge, data));
