#![no_main]
//! The CNI plugin's stdin network config, parsed for every command, and what is derived from it
//! without touching the host: the IPAM range, the default routes, prevResult, the VERSION answer.
use std::collections::HashSet;

use berth_cni::config::{self, Command, Plugin};
use berth_cni::{ipam, result::CniResult};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = config::sniff_version(data);
    // VERSION only reads stdin; the other commands would touch the host, so only their parsing runs.
    let out = berth_cni::run(
        |k| (k == "CNI_COMMAND").then(|| "VERSION".to_string()),
        data,
    );
    assert_eq!(out.exit_code, 0, "VERSION never fails");
    for cmd in [
        Command::Add,
        Command::Del,
        Command::Check,
        Command::Gc,
        Command::Status,
    ] {
        let Ok(conf) = config::parse_netconf(data, cmd) else {
            continue;
        };
        if let Plugin::Bridge(b) = &conf.plugin {
            let r = &b.range;
            let _ = r.capacity();
            if let Some(ip) = ipam::next_free(r, &HashSet::new(), Some(r.end)) {
                assert!(
                    r.allocatable(ip),
                    "next_free returned {ip}, not allocatable in {r:?}"
                );
                let _ = r.with_prefix(ip);
            }
            let _ = r.with_prefix(r.gateway);
        }
        if let Some(prev) = &conf.prev_result {
            if let Ok(res) = CniResult::parse(prev) {
                let _ = serde_json::to_vec(&res.render(conf.version));
            }
        }
    }
});
