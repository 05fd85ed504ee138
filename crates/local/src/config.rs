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
    #[arg(
        long,
        env = "ACKFLOW_CONCURRENCY",
        default_value_t = 64,
        value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=1000)
    )]
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

/// Parses `token=owner,token=owner` (the last `=` of an entry ends its token). A token is what
/// a client can send after `Bearer ` (RFC 6750: letters, digits and `-._~+/`, `=` at its end),
/// at least 16 characters, and listed once: anything else could never authenticate, or would
/// silently belong to whichever owner came last. Messages name the entry's position and owner,
/// never the token.
pub fn parse_tokens(text: &str) -> Result<HashMap<String, Owner>, ConfigError> {
    let mut tokens: HashMap<String, Owner> = HashMap::new();
    for (i, pair) in text
        .split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .enumerate()
    {
        let entry = i + 1;
        let (token, owner) = pair.rsplit_once('=').ok_or_else(|| {
            ConfigError(format!("ACKFLOW_TOKENS: entry {entry} is not token=owner"))
        })?;
        let owner = Owner::parse(owner.trim())
            .map_err(|e| ConfigError(format!("ACKFLOW_TOKENS: entry {entry}: {e}")))?;
        if token.len() < 16 {
            return Err(ConfigError(format!(
                "ACKFLOW_TOKENS: entry {entry} (owner {owner}): tokens must be at least 16 characters"
            )));
        }
        if !is_bearer_token(token) {
            return Err(ConfigError(format!(
                "ACKFLOW_TOKENS: entry {entry} (owner {owner}): a token holds only letters, digits \
                 and -._~+/ (with = at its end), no spaces or other characters: a client could \
                 never send it"
            )));
        }
        if let Some(first) = tokens.get(token) {
            return Err(ConfigError(format!(
                "ACKFLOW_TOKENS: entry {entry} (owner {owner}) repeats the token of owner {first}: \
                 each token belongs to one owner"
            )));
        }
        tokens.insert(token.to_owned(), owner);
    }
    Ok(tokens)
}

/// RFC 6750's `b64token`.
fn is_bearer_token(token: &str) -> bool {
    let body = token.trim_end_matches('=');
    !body.is_empty()
        && body
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~+/".contains(&b))
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
        for out_of_range in ["0", "1001", "18446744073709551616"] {
            assert!(Cli::try_parse_from(["ackflow", "--concurrency", out_of_range]).is_err());
        }
    }

    #[test]
    fn tokens_parse_and_short_ones_are_refused() {
        let t = parse_tokens("aaaaaaaaaaaaaaaa=alice, bbbbbbbbbbbbbbbb=bob").expect("parses");
        assert_eq!(t.get("aaaaaaaaaaaaaaaa").map(Owner::as_str), Some("alice"));
        assert!(parse_tokens("short=alice").is_err());
        assert!(parse_tokens("no-equals-sign-here").is_err());
        assert!(parse_tokens("").expect("empty is fine").is_empty());
    }

    #[test]
    fn a_token_listed_twice_or_unsendable_is_refused_without_echoing_it() {
        let twice =
            parse_tokens("aaaaaaaaaaaaaaaa=alice,aaaaaaaaaaaaaaaa=bob").expect_err("refused");
        assert!(
            twice.0.contains("alice") && twice.0.contains("bob"),
            "{twice}"
        );
        for bad in [
            "aaaaaaaaaaaaaaaa =alice",
            "aaaaaaaa aaaaaaaa=alice",
            "aaaaaaaaaaaaaaaé=alice",
            "aaaaaaaaaaaaaaa\u{7}=alice",
            "=================alice",
        ] {
            let e = parse_tokens(bad).expect_err(bad);
            assert!(e.0.contains("entry 1") && !e.0.contains("aaaaaaaa"), "{e}");
        }
        // The last `=` of an entry ends the token, so a token may end in padding.
        let ok = parse_tokens("abcdefghij-._~+/0123===alice").expect("an RFC 6750 token");
        assert!(ok.contains_key("abcdefghij-._~+/0123=="));
    }
}
