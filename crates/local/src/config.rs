//! `ackflow serve`'s configuration: read once, at startup, from flags and `ACKFLOW_*`
//! environment variables (clap reads both), into typed values. A bad value stops startup with a
//! message that names the flag or variable.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use ackflow_core::{Owner, Settings};
use ackflow_sqlite::Durability;

/// The knobs of SPEC.md ("One set of knobs"), with the names `template.yaml` uses too.
#[derive(Debug, Clone, clap::Args)]
pub struct Knobs {
    /// Attempts per job, counted by the store.
    #[arg(long, env = "ACKFLOW_MAX_ATTEMPTS", default_value_t = 5)]
    pub max_attempts: u32,
    /// Seconds one attempt may run before it counts as a transient failure.
    #[arg(long, env = "ACKFLOW_WORKER_TIMEOUT_SECS", default_value_t = 30)]
    pub worker_timeout_secs: u64,
    /// Milliseconds a lease outlives the worker timeout, so a slow final write is not taken for a crash.
    #[arg(long, env = "ACKFLOW_LEASE_GRACE_MS", default_value_t = 5000)]
    pub lease_grace_ms: u64,
    /// Seconds a received message stays invisible (default: worker timeout + 10 s).
    #[arg(long, env = "ACKFLOW_VISIBILITY_TIMEOUT_SECS")]
    pub visibility_timeout_secs: Option<u64>,
    /// First retry delay in milliseconds; doubles per attempt.
    #[arg(long, env = "ACKFLOW_BACKOFF_BASE_MS", default_value_t = 1000)]
    pub backoff_base_ms: u64,
    /// Largest retry delay in seconds.
    #[arg(long, env = "ACKFLOW_BACKOFF_MAX_SECS", default_value_t = 60)]
    pub backoff_max_secs: u64,
    /// Every job is terminal by accept time + this many seconds (+ one sweep period).
    #[arg(long, env = "ACKFLOW_JOB_DEADLINE_SECS", default_value_t = 900)]
    pub job_deadline_secs: u64,
    /// Seconds between two sweeps.
    #[arg(long, env = "ACKFLOW_SWEEP_PERIOD_SECS", default_value_t = 10)]
    pub sweep_period_secs: u64,
    /// Seconds a queued job may go untouched before the sweeper re-sends its message
    /// (default: visibility timeout + backoff max + 30 s).
    #[arg(long, env = "ACKFLOW_RESEND_AFTER_SECS")]
    pub resend_after_secs: Option<u64>,
    /// Seconds terminal jobs are kept.
    #[arg(long, env = "ACKFLOW_RETENTION_SECS", default_value_t = 7 * 24 * 3600)]
    pub retention_secs: u64,
    /// Largest request body in bytes.
    #[arg(long, env = "ACKFLOW_BODY_LIMIT_BYTES", default_value_t = 256 * 1024)]
    pub body_limit_bytes: usize,
    /// Longest `?wait=` in seconds.
    #[arg(long, env = "ACKFLOW_LONG_POLL_CAP_SECS", default_value_t = 20)]
    pub long_poll_cap_secs: u64,
}

impl Knobs {
    /// The core's settings, checked for consistency.
    pub fn settings(&self) -> Result<Settings, ConfigError> {
        let defaults = Settings::default();
        if self.max_attempts == 0 {
            return Err(ConfigError(
                "ACKFLOW_MAX_ATTEMPTS must be at least 1".into(),
            ));
        }
        if self.worker_timeout_secs == 0 {
            return Err(ConfigError(
                "ACKFLOW_WORKER_TIMEOUT_SECS must be at least 1".into(),
            ));
        }
        let worker_timeout = Duration::from_secs(self.worker_timeout_secs);
        let lease_grace = Duration::from_millis(self.lease_grace_ms);
        let visibility_timeout = self.visibility_timeout_secs.map_or(
            worker_timeout + Duration::from_secs(10),
            Duration::from_secs,
        );
        if visibility_timeout < worker_timeout {
            return Err(ConfigError(
                "ACKFLOW_VISIBILITY_TIMEOUT_SECS must be at least ACKFLOW_WORKER_TIMEOUT_SECS, or messages come back \
                 while their attempt still runs"
                    .into(),
            ));
        }
        let backoff_max = Duration::from_secs(self.backoff_max_secs);
        let resend_after = self.resend_after_secs.map_or(
            visibility_timeout + backoff_max + Duration::from_secs(30),
            Duration::from_secs,
        );
        let settings = Settings {
            max_attempts: self.max_attempts,
            worker_timeout,
            lease_grace,
            visibility_timeout,
            backoff_base: Duration::from_millis(self.backoff_base_ms.max(1)),
            backoff_max,
            job_deadline: Duration::from_secs(self.job_deadline_secs),
            sweep_period: Duration::from_secs(self.sweep_period_secs.max(1)),
            resend_after,
            retention: Duration::from_secs(self.retention_secs),
            body_limit: self.body_limit_bytes,
            long_poll_cap: Duration::from_secs(self.long_poll_cap_secs),
            ..defaults
        };
        if settings.job_deadline <= settings.lease() {
            return Err(ConfigError(
                "ACKFLOW_JOB_DEADLINE_SECS must exceed the worker timeout plus the lease grace, or no attempt can start"
                    .into(),
            ));
        }
        Ok(settings)
    }
}

/// A configuration value that cannot work.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

/// Everything `ackflow serve` reads.
#[derive(Debug, Clone, clap::Args)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "ACKFLOW_LISTEN", default_value = "127.0.0.1:3000")]
    pub listen: SocketAddr,
    /// Directory of the SQLite database (created if missing).
    #[arg(long, env = "ACKFLOW_DATA_DIR", default_value = "./ackflow-data")]
    pub data_dir: PathBuf,
    /// Bearer tokens and their owners, as `token=owner,token=owner`. Empty: authentication is off and every
    /// request belongs to one anonymous owner.
    #[arg(
        long,
        env = "ACKFLOW_TOKENS",
        default_value = "",
        hide_env_values = true
    )]
    pub tokens: String,
    /// Jobs processed at once.
    #[arg(long, env = "ACKFLOW_CONCURRENCY", default_value_t = 16)]
    pub concurrency: usize,
    /// `normal`: a commit survives a crash of the process (kill -9); `full`: also a power loss (fsync per commit).
    #[arg(long, env = "ACKFLOW_DURABILITY", default_value = "normal", value_parser = parse_durability)]
    pub durability: Durability,
    /// Serve the `demo` kind (on by default on one machine).
    #[arg(long, env = "ACKFLOW_DEMO", default_value_t = true, action = clap::ArgAction::Set)]
    pub demo: bool,
    /// The knobs.
    #[command(flatten)]
    pub knobs: Knobs,
}

fn parse_durability(s: &str) -> Result<Durability, String> {
    match s {
        "normal" => Ok(Durability::Normal),
        "full" => Ok(Durability::Full),
        _ => Err("expected 'normal' or 'full'".into()),
    }
}

/// Parses `token=owner,token=owner`.
pub fn parse_tokens(text: &str) -> Result<HashMap<String, Owner>, ConfigError> {
    let mut tokens = HashMap::new();
    for pair in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (token, owner) = pair
            .split_once('=')
            .ok_or_else(|| ConfigError("ACKFLOW_TOKENS: each entry is token=owner".into()))?;
        if token.len() < 16 {
            return Err(ConfigError(
                "ACKFLOW_TOKENS: tokens must be at least 16 characters".into(),
            ));
        }
        let owner = Owner::parse(owner).map_err(|e| ConfigError(format!("ACKFLOW_TOKENS: {e}")))?;
        tokens.insert(token.to_owned(), owner);
    }
    Ok(tokens)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        serve: ServeArgs,
    }

    #[test]
    fn defaults_give_the_documented_settings() {
        let cli = Cli::try_parse_from(["ackflow"]).expect("defaults parse");
        let s = cli.serve.knobs.settings().expect("valid");
        assert_eq!(s, Settings::default());
        assert_eq!(cli.serve.listen.to_string(), "127.0.0.1:3000");
    }

    #[test]
    fn inconsistent_knobs_are_refused_with_the_variable_named() {
        let cli = Cli::try_parse_from([
            "ackflow",
            "--worker-timeout-secs",
            "60",
            "--visibility-timeout-secs",
            "10",
        ])
        .expect("parses");
        let err = cli.serve.knobs.settings().expect_err("refused");
        assert!(err.0.contains("ACKFLOW_VISIBILITY_TIMEOUT_SECS"), "{err}");
    }

    #[test]
    fn tokens_parse_and_short_ones_are_refused() {
        let t = parse_tokens("aaaaaaaaaaaaaaaa=alice, bbbbbbbbbbbbbbbb=bob").expect("parses");
        assert_eq!(t.get("aaaaaaaaaaaaaaaa").map(Owner::as_str), Some("alice"));
        assert!(parse_tokens("short=alice").is_err());
        assert!(parse_tokens("no-equals-sign-here").is_err());
        assert!(parse_tokens("").expect("empty is fine").is_empty());
    }
}
