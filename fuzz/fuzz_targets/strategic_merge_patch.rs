#![no_main]
//! A PATCH body of type application/strategic-merge-patch+json.
use berth::controlplane::apiserver::{fuzzing, patch::PatchType};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| fuzzing::patch_body(PatchType::Strategic, data));
