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
