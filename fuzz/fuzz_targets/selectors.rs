#![no_main]
//! A list/watch URL path and query (labelSelector, fieldSelector), and bare selectors.
use berth::controlplane::apiserver::fuzzing;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| fuzzing::selectors(data));
