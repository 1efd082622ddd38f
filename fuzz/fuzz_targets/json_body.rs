#![no_main]
//! A create/update/delete request body sent as application/json.
use berth::controlplane::apiserver::fuzzing;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| fuzzing::json_body(data));
