//! Reloading what security rests on without a restart: on SIGHUP, the TLS files and the
//! principals file; and the TLS files by themselves when they change (a certificate renewed by
//! certbot or cert-manager). A file that fails to load leaves the settings in use, with an error
//! in the log and the failure counted.

use std::sync::Arc;
use std::time::Duration;

use super::tls::TlsSettings;
use crate::auth::Gate;
use crate::metrics as m;
use crate::shutdown::Shutdown;

/// How often the TLS files' modification times are looked at.
const WATCH_INTERVAL: Duration = Duration::from_secs(2);

pub fn reload_on_signal(tls: Option<Arc<TlsSettings>>, gate: Arc<Gate>, mut shutdown: Shutdown) -> anyhow::Result<()> {
    let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
    tokio::spawn(async move {
        let mut watch = tokio::time::interval(WATCH_INTERVAL);
        loop {
            tokio::select! {
                _ = hangup.recv() => {
                    if let Some(tls) = &tls {
                        reload_tls(tls, "SIGHUP");
                    }
                    match gate.reload() {
                        Ok(principals) if gate.enabled() => tracing::info!(principals, "principals reloaded (SIGHUP)"),
                        Ok(_) => {}
                        Err(error) => tracing::error!(error = format!("{error:#}"), "reloading the principals failed; the ones in use stay"),
                    }
                }
                _ = watch.tick() => {
                    if let Some(tls) = tls.as_ref().filter(|t| t.files_changed()) {
                        reload_tls(tls, "file changed");
                    }
                }
                _ = shutdown.wait() => break,
            }
        }
    });
    Ok(())
}

fn reload_tls(tls: &TlsSettings, why: &'static str) {
    match tls.reload() {
        Ok(()) => {
            metrics::counter!(m::TLS_RELOADS, "outcome" => "ok").increment(1);
            tracing::info!(why, "TLS certificate reloaded");
        }
        Err(error) => {
            metrics::counter!(m::TLS_RELOADS, "outcome" => "failed").increment(1);
            tracing::error!(why, error = format!("{error:#}"), "reloading the TLS certificate failed; the one in use stays");
        }
    }
}
