//! `ackflow serve`'s configuration: read once, at startup, from flags and `ACKFLOW_*`
//! environment variables (clap reads both; the knobs shared with AWS are read by
//! [`Settings::from_lookup`]), into typed values. A bad value stops startup with a message that
//! names the flag or variable.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use ackflow_core::{Owner, Settings, SettingsError};
use ackflow_sqlite::Durability;

/// A flag or variable whose value cannot work.
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
    /// Jobs processed at once. Each waits mostly on its own writes, so more than the cores keep the
    /// worker busy; a processor with heavy CPU work belongs on a blocking thread.
    #[arg(long, env = "ACKFLOW_CONCURRENCY", default_value_t = 64)]
    pub concurrency: usize,
    /// `normal`: a commit survives a crash of the process (kill -9); `full`: also a power loss (fsync per commit).
    #[arg(long, env = "ACKFLOW_DURABILITY", default_value = "normal")]
    pub durability: Durability,
    /// Serve the `demo` kind (on by default on one machine).
    #[arg(long, env = "ACKFLOW_DEMO", default_value_t = true, action = clap::ArgAction::Set)]
    pub demo: bool,
}

impl ServeArgs {
    /// The knobs (`ACKFLOW_MAX_ATTEMPTS` and the rest, see the README), read from the environment
    /// by the same code on every runtime.
    pub fn settings(&self) -> Result<Settings, SettingsError> {
        Settings::from_lookup(Settings::default(), |name| std::env::var(name).ok())
    }

    /// Reads every setting once and reports the first mistake, so that `serve` can refuse a bad
    /// configuration before it announces an address.
    pub fn check(&self) -> anyhow::Result<()> {
        self.settings()?;
        parse_tokens(&self.tokens)?;
        Ok(())
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
    fn defaults_listen_on_localhost_3000_with_the_demo_kind() {
        let cli = Cli::try_parse_from(["ackflow"]).expect("defaults parse");
        assert_eq!(cli.serve.listen.to_string(), "127.0.0.1:3000");
        assert!(cli.serve.demo);
        assert!(Cli::try_parse_from(["ackflow", "--durability", "sometimes"]).is_err());
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
