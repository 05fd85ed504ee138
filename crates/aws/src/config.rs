//! What a function reads from its environment, and the SDK clients built once from it.

use std::time::Duration;

use ackflow_core::{Settings, SettingsError};
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, SdkConfig};
use aws_sdk_sqs::config::SharedHttpClient;
use aws_smithy_http_client::tls::{rustls_provider::CryptoMode, Provider, TlsContext, TrustStore};

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

/// How long the SDK may spend on one call: connecting, one attempt, and the whole call with its
/// retries. A Lambda function is killed at its timeout and its client then gets API Gateway's
/// bare 503, so a function's budget is fitted into its timeout ([`SdkBudget::within`]) instead
/// of being a fixed number that a hung connection could outlast.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SdkBudget {
    /// Connecting (TCP and TLS).
    pub connect: Duration,
    /// One attempt: at most half the operation, so that a hung first attempt leaves room for a
    /// retry.
    pub attempt: Duration,
    /// The whole call with its retries.
    pub operation: Duration,
}

/// A budget that leaves a call less than this is refused: a DynamoDB or SQS call answers in
/// milliseconds, but a cold connection's TLS handshake and one retry must still fit.
pub const MIN_OPERATION: Duration = Duration::from_secs(1);

/// Kept free after the last call, to write the answer (or the batch response) before the
/// function's timeout.
pub const ANSWER_MARGIN: Duration = Duration::from_secs(1);

/// A budget that cannot fit. The message names the figures.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{calls} SDK call(s) in a row cannot fit in {slack:?} with {ANSWER_MARGIN:?} kept to answer: \
     each needs at least {MIN_OPERATION:?}"
)]
pub struct BudgetError {
    /// The time the calls had.
    pub slack: Duration,
    /// How many calls had to fit in it.
    pub calls: u32,
}

impl SdkBudget {
    /// The bounds where no function timeout applies (the CLI, tools, tests): DynamoDB and SQS
    /// (short polling) answer in milliseconds, so a 5 s attempt is a hung connection.
    pub const DEFAULT: SdkBudget = SdkBudget {
        connect: Duration::from_millis(3100),
        attempt: Duration::from_secs(5),
        operation: Duration::from_secs(15),
    };

    /// The budget of a function that may still have to make `calls` SDK calls one after another
    /// with `slack` left before it is killed: each call gets an equal share of `slack` less
    /// [`ANSWER_MARGIN`] (at most [`SdkBudget::DEFAULT`]'s), so that even when every call hangs
    /// to its timeout the function still answers.
    pub fn within(slack: Duration, calls: u32) -> Result<SdkBudget, BudgetError> {
        let refused = BudgetError { slack, calls };
        let share = slack
            .checked_sub(ANSWER_MARGIN)
            .and_then(|room| room.checked_div(calls))
            .ok_or(refused.clone())?;
        if share < MIN_OPERATION {
            return Err(refused);
        }
        let operation = share.min(Self::DEFAULT.operation);
        let attempt = (operation / 2).min(Self::DEFAULT.attempt);
        Ok(SdkBudget {
            // Under the attempt's, so that a connect that hangs is reported as a connect that
            // failed (nothing sent) rather than as an attempt that timed out (outcome unknown).
            connect: (attempt / 2).min(Self::DEFAULT.connect),
            attempt,
            operation,
        })
    }

    /// As the SDK's timeout configuration.
    pub fn timeout_config(&self) -> TimeoutConfig {
        TimeoutConfig::builder()
            .connect_timeout(self.connect)
            .operation_attempt_timeout(self.attempt)
            .operation_timeout(self.operation)
            .build()
    }
}

impl Clients {
    /// [`Clients::within`] the [`SdkBudget::DEFAULT`] bounds.
    pub async fn from_env() -> Clients {
        Self::within(SdkBudget::DEFAULT).await
    }

    /// Loads the SDK configuration from the environment once (region, credentials,
    /// `AWS_ENDPOINT_URL`, ...) with [`https_client`] and the timeouts of `budget`, and builds
    /// both clients from it.
    pub async fn within(budget: SdkBudget) -> Clients {
        let config = aws_config::defaults(BehaviorVersion::latest())
            .http_client(https_client())
            .timeout_config(budget.timeout_config())
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

/// The timeouts of [`SdkBudget::DEFAULT`], for configurations built by hand.
pub fn timeouts() -> TimeoutConfig {
    SdkBudget::DEFAULT.timeout_config()
}

/// The root certificates of Amazon Trust Services, which every AWS service endpoint's chain
/// ends in (regional, FIPS and VPC interface endpoints alike).
const AMAZON_TRUST_SERVICES: &[u8] = include_bytes!("../certs/amazon-trust-services.pem");

/// The one HTTP client of the SDK: hyper 1 with rustls on the *ring* crypto provider (also
/// speaks plain HTTP, for moto server). The SDK's default would pull aws-lc, which needs cmake
/// and nasm to cross-compile.
///
/// It trusts the five Amazon Trust Services roots compiled in, not the platform's store:
/// reading and parsing the ~145 certificates of a platform store took 4.6–6.9 ms of CPU here
/// against 0.05 ms for these five (docs/BENCHMARKS.md), at every cold start, on a Lambda's
/// fraction of a vCPU. The price: an endpoint whose certificate does not chain to Amazon (a
/// TLS-inspecting proxy) is refused.
pub fn https_client() -> SharedHttpClient {
    aws_smithy_http_client::Builder::new()
        .tls_provider(Provider::Rustls(CryptoMode::Ring))
        .tls_context(amazon_roots())
        .build_https()
}

fn amazon_roots() -> TlsContext {
    let roots = TrustStore::empty()
        .with_native_roots(false)
        .with_pem_certificate(AMAZON_TRUST_SERVICES);
    // Only fails on a custom server name that is not a DNS name; none is set.
    TlsContext::builder()
        .with_trust_store(roots)
        .build()
        .unwrap_or_default()
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
    fn a_budget_shares_the_time_left_between_the_calls_and_keeps_a_margin_to_answer() {
        let budget = SdkBudget::within(Duration::from_secs(9), 4).expect("fits");
        assert_eq!(budget.operation, Duration::from_secs(2));
        assert_eq!(budget.attempt, Duration::from_secs(1));
        assert_eq!(budget.connect, Duration::from_millis(500));
        assert!(budget.operation * 4 + ANSWER_MARGIN <= Duration::from_secs(9));
    }

    #[test]
    fn the_compiled_in_roots_are_the_five_amazon_trust_services_certificates() {
        use rustls_pki_types::pem::PemObject as _;
        use rustls_pki_types::CertificateDer;
        let certs: Vec<_> = CertificateDer::pem_slice_iter(AMAZON_TRUST_SERVICES)
            .collect::<Result<_, _>>()
            .expect("every certificate parses (the client would panic on one that does not)");
        assert_eq!(certs.len(), 5);
    }

    #[test]
    fn a_long_timeout_keeps_the_default_bounds() {
        let budget = SdkBudget::within(Duration::from_secs(300), 2).expect("fits");
        assert_eq!(budget.operation, SdkBudget::DEFAULT.operation);
        assert_eq!(budget.attempt, SdkBudget::DEFAULT.attempt);
        assert!(budget.connect < budget.attempt, "{budget:?}");
    }

    #[test]
    fn a_budget_that_leaves_a_call_too_little_is_refused_naming_the_figures() {
        for (slack, calls) in [
            (Duration::from_secs(4), 4),
            (ANSWER_MARGIN, 1),
            (Duration::ZERO, 1),
        ] {
            let e = SdkBudget::within(slack, calls).expect_err("refused");
            assert_eq!(e, BudgetError { slack, calls });
            assert!(e.to_string().contains(&format!("{calls} SDK call")), "{e}");
        }
        let e = SdkBudget::within(Duration::from_secs(5), 0).expect_err("no calls");
        assert_eq!(e.calls, 0);
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
