//! The `berth-cni` binary (also installed as `loopback`): one CNI invocation per process.

use std::io::{Read, Write};

use berth_cni::error::{code, CniError};

fn main() {
    std::panic::set_hook(Box::new(|info| {
        let e = CniError::new(code::INTERNAL, "internal error", info.to_string());
        let _ = writeln!(std::io::stdout(), "{}", e.to_json(berth_cni::version::LATEST));
        std::process::exit(1);
    }));
    let mut stdin = Vec::new();
    if let Err(e) = std::io::stdin().read_to_end(&mut stdin) {
        let e = CniError::new(code::IO_FAILURE, "failed to read network config from stdin", e.to_string());
        let _ = writeln!(std::io::stdout(), "{}", e.to_json(berth_cni::version::LATEST));
        std::process::exit(1);
    }
    let out = berth_cni::run(|k| std::env::var(k).ok(), &stdin);
    let mut stdout = std::io::stdout().lock();
    let _ = stdout.write_all(&out.stdout);
    let _ = stdout.flush();
    std::process::exit(out.exit_code);
}
