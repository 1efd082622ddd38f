#![no_main]
//! A request body sent as application/vnd.kubernetes.protobuf.
use berth::controlplane::apiserver::fuzzing;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| fuzzing::protobuf_body(data));
