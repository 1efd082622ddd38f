//! Process-wide shutdown: the first SIGTERM/SIGINT cancels the root token (graceful), the second
//! exits at once.
use tokio::signal::unix::{signal, SignalKind};
use tokio_util::sync::CancellationToken;

/// A root cancellation token cancelled by the first SIGTERM or SIGINT; a second one exits the
/// process with status 130. Must be called inside a tokio runtime.
pub fn on_signals() -> CancellationToken {
    let token = CancellationToken::new();
    let root = token.clone();
    tokio::spawn(async move {
        let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else {
            tracing::error!("cannot install signal handlers");
            return;
        };
        for n in 0..2 {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
            if n == 0 {
                tracing::info!("shutting down (send the signal again to force)");
                root.cancel();
            } else {
                tracing::warn!("second signal: exiting now");
                std::process::exit(130);
            }
        }
    });
    token
}

/// Call `op` until it succeeds, waiting 100 ms after the first failure and twice as long after
/// each further one, up to `cap`; every failure is logged with `what`. `None` when `shutdown`
/// fires first.
pub async fn retry<T, E, F, Fut>(shutdown: &CancellationToken, cap: std::time::Duration, what: &str, mut op: F) -> Option<T>
where
    E: std::fmt::Display,
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
{
    let mut delay = std::time::Duration::from_millis(100);
    loop {
        match op().await {
            Ok(v) => return Some(v),
            Err(e) => tracing::warn!(error = %e, "{what}; retrying"),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return None,
            _ = tokio::time::sleep(delay) => {}
        }
        delay = (delay * 2).min(cap);
    }
}
