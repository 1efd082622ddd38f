//! `berth-control-plane`: the minimal control plane alone (API server, embedded store,
//! scheduler, node IPAM), for hosts whose agents join it with `berth agent`.
use clap::Parser;

use berth::cli::ControlPlaneArgs;

#[derive(Parser, Debug)]
#[command(
    name = "berth-control-plane",
    version,
    about = "Minimal Kubernetes control plane: API server, store, scheduler, node IPAM"
)]
struct Cli {
    #[command(flatten)]
    control_plane: ControlPlaneArgs,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    berth::cli::run_daemon(|shutdown| async move {
        let cfg = cli.control_plane.config(berth::agent::config::default_node_ip());
        let cp = berth::controlplane::start(cfg, shutdown).await?;
        println!("berth control plane is up at {}", cp.server_url);
        println!("Admin kubeconfig: {}", cp.admin_kubeconfig.display());
        println!("Try: kubectl --kubeconfig {} get nodes", cp.admin_kubeconfig.display());
        berth::sdnotify::ready(&format!("serving {}", cp.server_url));
        cp.wait().await
    })
}
