//! What a function reads from its environment, and the SDK clients built once from it.

use std::time::Duration;

use ackflow_core::{Settings, SettingsError};
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, SdkConfig};
use aws_sdk_sqs::config::SharedHttpClient;
use aws_smithy_http_client::tls::{rustls_provider::CryptoMode, Provider};

/// The environment variables of the AWS runtime, beside the knobs of
/// [`ackflow_core::settings::env`]. `AWS_REGION`, `AWS_ENDPOINT_URL` and credentials are the
/// SDK's own.
pub mod env {
    /// URL of the jobs queue.
    pub const QUEUE_URL: &str = "ACKFLOW_QUEUE_URL";
    /// URL of its dead-letter queue.
    pub const DLQ_URL: &str = "ACKFLOW_DLQ_URL";
    /// Name of the DynamoDB table.
    pub const TABLE: &str = "ACKFLOW_TABLE";
}

/// A function's configuration: where its queue and table are, and the knobs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AwsConfig {
    /// URL of the jobs queue ([`env::QUEUE_URL`]).
    pub queue_url: String,
    /// URL of the dead-letter queue ([`env::DLQ_URL`]).
    pub dlq_url: String,
    /// Name of the table ([`env::TABLE`]).
    pub table: String,
    /// The knobs, read with [`Settings::from_lookup`].
    pub settings: Settings,
}

/// A configuration that cannot work. The message names the variable.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A required variable is unset or empty.
    #[error("{0} is not set")]
    Missing(&'static str),
    /// A knob has a value that cannot work.
    #[error(transparent)]
    Settings(#[from] SettingsError),
}

impl AwsConfig {
    /// Reads the process environment. Call once, at startup: a missing variable is a startup error.
    pub fn from_env() -> Result<AwsConfig, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads the variables through `lookup` (tests pass a map).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<AwsConfig, ConfigError> {
        let required = |name: &'static str| {
            lookup(name)
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
                .ok_or(ConfigError::Missing(name))
        };
        Ok(AwsConfig {
            queue_url: required(env::QUEUE_URL)?,
            dlq_url: required(env::DLQ_URL)?,
            table: required(env::TABLE)?,
            settings: Settings::from_lookup(Settings::default(), &lookup)?,
        })
    }
}

/// The SDK clients of a process. Build them once, outside the handler: they hold the connection
/// pool and the credentials cache. Cloning is cheap (the clients are reference-counted).
#[derive(Debug, Clone)]
pub struct Clients {
    /// SQS.
    pub sqs: aws_sdk_sqs::Client,
    /// DynamoDB.
    pub dynamo: aws_sdk_dynamodb::Client,
}

/// How long one attempt of an SDK call may take. DynamoDB and SQS (short polling) answer in
/// milliseconds; a connection that hangs must not hold a Lambda until its own timeout, so the
/// attempt is abandoned (and retried by the SDK) well before.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a call may take with its retries.
const OPERATION_TIMEOUT: Duration = Duration::from_secs(15);

impl Clients {
    /// Loads the SDK configuration from the environment once (region, credentials,
    /// `AWS_ENDPOINT_URL`, ...) with [`https_client`] and bounded timeouts, and builds both
    /// clients from it.
    pub async fn from_env() -> Clients {
        let config = aws_config::defaults(BehaviorVersion::latest())
            .http_client(https_client())
            .timeout_config(timeouts())
            .load()
            .await;
        Self::from_sdk_config(&config)
    }

    /// Both clients from one SDK configuration (tests build one for moto server). The
    /// configuration must carry an HTTP client: the SDK crates are built without a default one
    /// (use [`https_client`]).
    pub fn from_sdk_config(config: &SdkConfig) -> Clients {
        Clients {
            sqs: aws_sdk_sqs::Client::new(config),
            dynamo: aws_sdk_dynamodb::Client::new(config),
        }
    }
}

/// The timeouts [`Clients::from_env`] uses, for configurations built by hand.
pub fn timeouts() -> TimeoutConfig {
    TimeoutConfig::builder()
        .connect_timeout(Duration::from_millis(3100))
        .operation_attempt_timeout(ATTEMPT_TIMEOUT)
        .operation_timeout(OPERATION_TIMEOUT)
        .build()
}

/// The one HTTP client of the SDK: hyper 1 with rustls on the *ring* crypto provider (also
/// speaks plain HTTP, for moto server). The SDK's default would pull aws-lc, which needs cmake
/// and nasm to cross-compile.
pub fn https_client() -> SharedHttpClient {
    aws_smithy_http_client::Builder::new()
        .tls_provider(Provider::Rustls(CryptoMode::Ring))
        .build_https()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn from(pairs: &[(&str, &str)]) -> Result<AwsConfig, ConfigError> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        AwsConfig::from_lookup(|name| map.get(name).cloned())
    }

    const ALL: [(&str, &str); 3] = [
        (env::QUEUE_URL, "http://127.0.0.1:5000/123456789012/jobs"),
        (env::DLQ_URL, "http://127.0.0.1:5000/123456789012/jobs-dlq"),
        (env::TABLE, "ackflow"),
    ];

    #[test]
    fn the_three_variables_and_the_knobs_make_a_configuration() {
        let mut pairs = ALL.to_vec();
        pairs.push((ackflow_core::settings::env::MAX_ATTEMPTS, "3"));
        let config = from(&pairs).expect("valid");
        assert_eq!(config.queue_url, ALL[0].1);
        assert_eq!(config.dlq_url, ALL[1].1);
        assert_eq!(config.table, "ackflow");
        assert_eq!(config.settings.max_attempts, 3);
    }

    #[test]
    fn a_missing_or_empty_variable_is_named() {
        for missing in [env::QUEUE_URL, env::DLQ_URL, env::TABLE] {
            let without: Vec<_> = ALL.iter().copied().filter(|(k, _)| *k != missing).collect();
            let e = from(&without).expect_err("refused");
            assert!(e.to_string().contains(missing), "{e}");
            let mut empty = without.clone();
            empty.push((missing, "  "));
            let e = from(&empty).expect_err("refused");
            assert!(e.to_string().contains(missing), "{e}");
        }
    }

    #[test]
    fn a_bad_knob_is_refused_naming_it() {
        let mut pairs = ALL.to_vec();
        pairs.push((ackflow_core::settings::env::MAX_ATTEMPTS, "many"));
        let e = from(&pairs).expect_err("refused");
        assert!(
            e.to_string()
                .contains(ackflow_core::settings::env::MAX_ATTEMPTS),
            "{e}"
        );
    }
}
