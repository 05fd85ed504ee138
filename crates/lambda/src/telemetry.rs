//! Logs of a function: JSON lines on stdout, which Lambda sends to CloudWatch Logs, filtered by
//! `ACKFLOW_LOG` (an `EnvFilter` directive such as `info` or `ackflow_core=debug`, default
//! `info`). No ANSI colours and no timestamps of our own: CloudWatch stamps every line.

use tracing_subscriber::EnvFilter;

/// The variable of the log filter.
pub const LOG_FILTER: &str = "ACKFLOW_LOG";

/// Installs the JSON log subscriber. Call once, first thing in `main`; a second call does
/// nothing (the first subscriber stays).
pub fn init_logs() {
    let filter = EnvFilter::try_from_env(LOG_FILTER).unwrap_or_else(|_| EnvFilter::new("info"));
    let _already_set = tracing_subscriber::fmt()
        .json()
        .with_env_filter(filter)
        .with_ansi(false)
        .without_time()
        .with_current_span(true)
        .try_init();
}
