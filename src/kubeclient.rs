//! API clients from kubeconfigs, for the agent, the in-process controllers, tests and benchmarks.
use std::path::Path;

use anyhow::Context;
use kube::config::Kubeconfig;

/// A client for the current context of `kubeconfig`.
pub async fn from_kubeconfig(kubeconfig: Kubeconfig) -> anyhow::Result<kube::Client> {
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .context("loading the kubeconfig")?;
    kube::Client::try_from(config).context("building the API client")
}

/// A client for the current context of the kubeconfig file at `path`.
pub async fn from_file(path: &Path) -> anyhow::Result<kube::Client> {
    let kubeconfig =
        Kubeconfig::read_from(path).with_context(|| format!("reading kubeconfig {}", path.display()))?;
    from_kubeconfig(kubeconfig).await.with_context(|| format!("kubeconfig {}", path.display()))
}
